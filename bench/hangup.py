"""How fast the service lets go of clients that hang up, against real gunicorn and Redis.

Run: ``.venv/bin/python -m bench.hangup [--connections 1000]``

Opens that many idle streams (heartbeats every 30 s, nothing published), closes them all
at once, and times until the instance's connection count (``/health``) and the registry
(``/api/v1/connections``) are both empty. Prints JSON; the baseline, measured in the same
run, is how long opening the same connections took. Without noticing hang-ups, the
release would wait for heartbeat writes: 30 to 60 s.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # before anything imports socket or ssl

import argparse
import json
import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import gevent

from bench.servers import HOST, ServerSpec, start_redis, start_server

HEARTBEAT_S = 30.0


def _open_stream(port: int, index: int) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.sendall(f"GET /sse/user/hangup{index} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    received = b""
    while b"event: connected" not in received:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("the service closed a stream before greeting it")
        received += chunk
    return sock


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _counts(port: int) -> tuple[int, int]:
    """Open connections by the instance's slots, and (up to 1,001) by the registry."""
    base = f"http://{HOST}:{port}"
    budget = _get_json(f"{base}/health")["connections"]["instance"]
    listed = _get_json(f"{base}/api/v1/connections?limit=1000")
    return budget, listed["count"] + (1 if listed.get("next_cursor") else 0)


def measure(connections: int) -> dict:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-hangup-"))
    redis_proc, redis_port = start_redis(None, log_dir)
    try:
        service, port = start_server(
            ServerSpec("pushservice", workers=2, heartbeat_s=HEARTBEAT_S, cores=None),
            redis_port, log_dir)
        try:
            started = time.perf_counter()
            jobs = [gevent.spawn(_open_stream, port, i) for i in range(connections)]
            gevent.joinall(jobs, raise_error=True)
            opened_s = time.perf_counter() - started
            sockets = [job.value for job in jobs]
            while _counts(port)[1] < min(connections, 1000):
                gevent.sleep(0.05)  # registry entries are written as streams open
            started = time.perf_counter()
            for sock in sockets:
                sock.close()
            budget_free_s = registry_free_s = None
            while budget_free_s is None or registry_free_s is None:
                budget, listed = _counts(port)
                elapsed = time.perf_counter() - started
                if budget == 0 and budget_free_s is None:
                    budget_free_s = elapsed
                if listed == 0 and registry_free_s is None:
                    registry_free_s = elapsed
                if elapsed > 2 * HEARTBEAT_S + 10:
                    raise RuntimeError(f"still {budget} open and {listed} listed")
                gevent.sleep(0.01)
        finally:
            service.stop()
    finally:
        redis_proc.stop()
        shutil.rmtree(log_dir, ignore_errors=True)
    return {
        "connections": connections,
        "heartbeat_interval_s": HEARTBEAT_S,
        "baseline_open_all_s": round(opened_s, 3),
        "slots_free_after_close_s": round(budget_free_s, 3),
        "registry_empty_after_close_s": round(registry_free_s, 3),
        "release_vs_open": round(max(budget_free_s, registry_free_s) / opened_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(measure(args.connections), indent=2))


if __name__ == "__main__":
    main()
