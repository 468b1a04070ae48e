"""``python -m pushservice`` (what ``make run`` runs), as a newcomer meets it: with
authentication off it listens on this machine only, and a port in use is said plainly
before anything starts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.support.gunicorn_server import PASSED_THROUGH, REPO_ROOT
from tests.support.ports import free_port
from tests.support.waiting import wait_until


def _environ(redis_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name in PASSED_THROUGH}
    env.update(REDIS_URL=redis_url, SERVICE_PORT=str(port), WORKERS="1", **extra)
    return env


def _launch(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pushservice"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    return process.stdout.read()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra, address", [
    ({}, "127.0.0.1"),  # authentication off: this machine only
    ({"SERVICE_HOST": "0.0.0.0"}, "0.0.0.0"),  # unless asked to open it to the network
], ids=["loopback by default", "SERVICE_HOST"])
def test_without_authentication_it_listens_where_it_should(redis_url, extra, address):
    port = free_port()
    process = _launch(_environ(redis_url, port, ENABLE_AUTH="false", **extra))
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/health",
                                        timeout=2).status_code == 200, 30,
                   message="the service to answer")
    finally:
        output = _stop(process)
    assert f"Listening at: http://{address}:{port}" in output, output
    if address == "127.0.0.1":
        assert f"http://localhost:{port}" in output
        assert "only this machine can connect" in output


@pytest.mark.timeout(60)
def test_a_port_in_use_is_said_before_anything_starts(redis_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        started = time.monotonic()
        process = _launch(_environ(redis_url, port, ENABLE_AUTH="false"))
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 1, output
    assert f"cannot listen on 127.0.0.1:{port}" in output and "SERVICE_PORT" in output
    assert "Listening at" not in output and "gevent worker(s)" not in output
    assert time.monotonic() - started < 20
