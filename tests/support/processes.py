"""Processes started by the suite: finding their children in /proc and stopping them by PID.

Also a registry of the servers that are running right now, so that a failing test can show
their logs (see ``pytest_runtest_makereport`` in conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None when the process is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()


def is_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie waiting to be reaped."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def child_pids(pid: int) -> list[int]:
    """PIDs of the live direct children of ``pid``, in ascending order."""
    children: set[int] = set()
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            children.update(int(p) for p in (task / "children").read_text().split())
    except FileNotFoundError:
        # The process is gone, or the kernel lacks /proc/<pid>/task/<tid>/children.
        children.update(_scan_children(pid))
    return sorted(p for p in children if is_alive(p))


def _scan_children(pid: int) -> set[int]:
    found = set()
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                found.add(int(entry.name))
    return found


def descendant_pids(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (children, their children, ...)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each PID that is still alive; PIDs that are gone are ignored."""
    for pid in pids:
        if is_alive(pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds for the processes to exit; returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if is_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [pid for pid in alive if is_alive(pid)]
    return alive


def stop_process(proc: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM) -> int | None:
    """Stop a process we started: ``sig``, then SIGKILL if it has not exited after ``timeout``.

    Returns the exit code the process had before SIGKILL was needed, or None when it had to
    be killed. Returns at once when it has already exited.
    """
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


class ChildServer:
    """A server the suite runs as a child process (``_proc``): ``with`` starts it unless it
    runs already, and closes it at the end. Subclasses provide ``start`` and ``close``."""

    _proc: subprocess.Popen | None = None

    def start(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def __enter__(self):
        return self if self.running else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True while the child process exists (a server may not answer yet)."""
        return self._proc is not None and self._proc.poll() is None


class Reportable(Protocol):
    """A running server whose logs are worth showing when a test fails."""

    def describe(self) -> str:
        """One line: what it is and where it listens."""

    def log_tail(self, max_chars: int = ...) -> str:
        """The end of its captured output."""


_live: list[Reportable] = []


def register(server: Reportable) -> None:
    """Remember a started server until ``unregister``."""
    if server not in _live:
        _live.append(server)


def unregister(server: Reportable) -> None:
    """Forget a server once it has been stopped for good."""
    if server in _live:
        _live.remove(server)


def live_servers() -> list[Reportable]:
    """The servers that are registered now, oldest first."""
    return list(_live)
