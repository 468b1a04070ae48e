"""The service as users run it: gunicorn with gevent workers, as a subprocess on loopback.

``ServiceProcess(redis_url).start()`` runs ``gunicorn -c gunicorn.conf.py wsgi:app`` from
the repository root, configured only through environment variables, and returns once
every worker answers. Its output goes to files that a failing test shows. It is stopped by
its PID (SIGTERM, then SIGKILL after a deadline), and so are its workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from .ports import free_port
from .processes import (
    ChildServer,
    child_pids,
    is_alive,
    kill_pids,
    register,
    unregister,
    wait_gone,
)
from .sse_client import SSEClient
from .waiting import Deadline

REPO_ROOT = Path(__file__).resolve().parents[2]

# Only these variables pass from the test process to the service, so that whatever a
# developer's shell exports (REDIS_URL, GUNICORN_CMD_ARGS, ...) cannot change a test.
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "LD_LIBRARY_PATH")


class ServiceError(RuntimeError):
    """The service did not start or stop as expected; the message carries its output."""


def gunicorn_command() -> list[str]:
    """How to run gunicorn with the interpreter that runs the tests (the project's venv)."""
    script = Path(sys.executable).parent / "gunicorn"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "gunicorn"]


class ServiceProcess(ChildServer):
    """One instance of the service: a gunicorn master and its gevent workers.

    The environment is ``REDIS_URL=redis_url``, ``SERVICE_PORT=port`` (a free port when
    None), ``WORKERS=workers``, ``ENABLE_AUTH=false``, then ``env``: a value replaces the
    default, None removes the variable. Two instances with the same ``redis_url`` form a
    cluster, as behind a load balancer.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        port: int | None = None,
        workers: int = 2,
        env: Mapping[str, str | None] | None = None,
        root: Path = REPO_ROOT,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.redis_url = redis_url
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.workers = workers
        self.root = Path(root)
        self.extra_args = tuple(extra_args)
        self.env = self._environment(env or {})
        self.log_dir = Path(tempfile.mkdtemp(prefix="pushservice-gunicorn-"))
        self.stdout_path = self.log_dir / "stdout.log"
        self.stderr_path = self.log_dir / "stderr.log"
        self.seen_worker_pids: set[int] = set()
        self._proc: subprocess.Popen | None = None
        self._log_offset = 0
        self._session = requests.Session()

    def _environment(self, overrides: Mapping[str, str | None]) -> dict[str, str]:
        env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
        env.update(
            REDIS_URL=self.redis_url,
            SERVICE_PORT=str(self.port),
            WORKERS=str(self.workers),
            ENABLE_AUTH="false",
            PYTHONUNBUFFERED="1",
        )
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = str(value)
        if "WORKERS" in env:
            self.workers = int(env["WORKERS"])
        return env

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        """Start gunicorn and wait until ``/health`` answers and every worker has answered.

        A worker counts once a ``/health`` response carried its ``pid``. Raises
        ServiceError, with the service's output, when that takes longer than ``timeout``
        or the master exits.
        """
        if self.running:
            raise ServiceError(f"{self.describe()} is already running")
        if not (self.root / "wsgi.py").is_file():
            raise ServiceError(f"no wsgi.py in {self.root}")
        deadline = Deadline(timeout)
        for attempt in range(3):
            self._spawn()
            try:
                self.wait_ready(deadline.remaining())
            except ServiceError:
                self.stop(timeout=5)
                # Another process took the free port first: try again on a new one, unless
                # the caller chose the port.
                if attempt < 2 and not self._fixed_port and self._lost_port_race():
                    self.port = free_port()
                    self.env["SERVICE_PORT"] = str(self.port)
                    continue
                raise
            except BaseException:
                self.stop(timeout=5)
                raise
            return self
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        argv = [*gunicorn_command(), "-c", "gunicorn.conf.py", *self.extra_args, "wsgi:app"]
        self._log_offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self._proc = subprocess.Popen(
                argv, cwd=self.root, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        register(self)

    def _lost_port_race(self) -> bool:
        with self.stderr_path.open("rb") as err:
            err.seek(self._log_offset)
            text = err.read().decode(errors="replace")
        return "Connection in use" in text or "Address already in use" in text

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``/health`` answers (any status) from each of the workers."""
        deadline = Deadline(timeout)
        while True:
            self._check_master()
            workers = self.worker_pids()
            try:
                response = self._session.get(
                    self.url("/health"),
                    timeout=min(2.0, deadline.remaining() + 0.1),
                    headers={"Connection": "close"},
                )
            except requests.RequestException:
                response = None
            if response is not None:
                self.seen_worker_pids.update(_reported_pids(response))
                if len(workers) >= self.workers and set(workers) <= self.seen_worker_pids:
                    return
            if deadline.expired():
                raise ServiceError(
                    f"{self.describe()} not ready within {timeout:g}s: workers {workers}, "
                    f"answered from {sorted(self.seen_worker_pids)}, last /health "
                    f"{None if response is None else response.status_code}\n{self.log_tail()}"
                )
            time.sleep(min(0.02, deadline.remaining()))

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the master and wait for it; SIGKILL it and its workers after ``timeout``.

        Returns the master's exit code, or None when it had to be killed. Idempotent.
        """
        proc = self._proc
        if proc is None:
            return None
        workers = self.worker_pids()
        code: int | None = proc.poll()
        if code is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                workers = sorted(set(workers) | set(self.worker_pids()))
                proc.kill()
                proc.wait(10)
                code = None
        # Workers whose master died before them would otherwise outlive the test.
        kill_pids(workers)
        wait_gone(workers, 5)
        unregister(self)
        return code

    def kill(self) -> None:
        """SIGKILL the master and every worker at once, as when a machine dies."""
        proc = self._proc
        if proc is None:
            return
        workers = self.worker_pids()
        kill_pids([proc.pid, *workers])
        proc.wait(10)
        wait_gone(workers, 5)

    def close(self) -> None:
        """Stop the service and delete its logs."""
        self.stop()
        self._session.close()
        shutil.rmtree(self.log_dir, ignore_errors=True)

    # -- state ---------------------------------------------------------------------------

    @property
    def master_pid(self) -> int | None:
        """PID of the gunicorn master, None before start."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The master's exit code once it has exited, else None."""
        return None if self._proc is None else self._proc.poll()

    def worker_pids(self) -> list[int]:
        """PIDs of the master's live children (the workers), from /proc."""
        pid = self.master_pid
        return child_pids(pid) if pid is not None and is_alive(pid) else []

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this instance."""
        return self.base_url + path

    def describe(self) -> str:
        """``pushservice on 127.0.0.1:<port> (master pid N, workers [...])``."""
        return f"pushservice on 127.0.0.1:{self.port} (master pid {self.master_pid}, workers {self.worker_pids()})"

    def output(self) -> str:
        """Everything the service wrote so far, stdout then stderr."""
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            if text:
                parts.append(f"--- {label} ---\n{text}")
        return "\n".join(parts)

    def log_tail(self, max_chars: int = 6000) -> str:
        """The end of ``output()``."""
        return self.output()[-max_chars:]

    # -- talking to it -------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """An HTTP request to this instance (10 s timeout unless given)."""
        kwargs.setdefault("timeout", 10)
        return self._session.request(method, self.url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET ``path``."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """POST ``path`` (pass ``json=...`` for a JSON body)."""
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        """DELETE ``path``."""
        return self.request("DELETE", path, **kwargs)

    def publish(self, message: Mapping[str, Any], **kwargs: Any) -> requests.Response:
        """POST one message to ``/api/v1/messages/send``."""
        return self.post("/api/v1/messages/send", json=message, **kwargs)

    def sse(self, path: str, **kwargs: Any) -> SSEClient:
        """Open an SSE connection to ``path``; keyword arguments go to SSEClient."""
        return SSEClient(self.url(path), **kwargs)

    def sse_on_every_worker(
        self, path: str, *, at_least: int, total: int = 0, limit: int = 400
    ) -> dict[int, list[SSEClient]]:
        """Open streams to ``path`` until each worker holds ``at_least`` (and ``total`` are open).

        The kernel hands a connection to whichever worker accepts first, and an idle or
        busy worker can lose every race for a while, so a fixed number of streams does not
        reach both. Returns the streams by the worker PID their greeting names.
        """
        by_worker: dict[int, list[SSEClient]] = {}
        opened = 0

        def enough() -> bool:
            counts = [len(by_worker.get(pid, [])) for pid in self.worker_pids()]
            return opened >= total and len(counts) >= self.workers and min(counts) >= at_least

        try:
            while not enough():
                if opened >= limit:
                    raise ServiceError(
                        f"{limit} streams reached workers "
                        f"{ {pid: len(c) for pid, c in by_worker.items()} }, not "
                        f"{at_least} on each of {self.worker_pids()}"
                    )
                client = self.sse(path)
                opened += 1
                try:
                    greeting = client.wait_for(lambda frame: frame.event == "connected")
                except BaseException:
                    client.close()
                    raise
                by_worker.setdefault(greeting.json()["worker"], []).append(client)
        except BaseException:
            for clients in by_worker.values():
                for client in clients:
                    client.close()
            raise
        return by_worker

    def open_connections(self) -> int:
        """The streams this instance holds, all workers together (from ``/health``)."""
        return self.get("/health").json()["connections"]["instance"]

    # -- internals -----------------------------------------------------------------------

    def _check_master(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise ServiceError(
                f"gunicorn exited with {self._proc.returncode} while starting on port "
                f"{self.port}\n{self.log_tail()}"
            )


def _reported_pids(response: requests.Response) -> set[int]:
    """Worker PIDs a /health response names: its ``pid`` (and any ``worker_pids`` list)."""
    try:
        body = response.json()
    except ValueError:
        return set()
    if not isinstance(body, dict):
        return set()
    found: set[int] = set()
    for key in ("pid", "worker_pid"):
        if isinstance(body.get(key), int):
            found.add(body[key])
    for key in ("worker_pids", "workers"):
        value = body.get(key)
        if isinstance(value, list):
            for item in value:
                pid = item.get("pid") if isinstance(item, dict) else item
                if isinstance(pid, int):
                    found.add(pid)
    return found
