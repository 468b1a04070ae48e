"""MAX_CONNECTIONS per instance, counted across the workers of one gunicorn master.

Each worker owns one slot of a small shared-memory table (allocated by the master
before it forks) and writes only its own count, so no lock is needed; a worker that dies
has its slot cleared by the master. Readers sum the slots. Two workers accepting at the
same instant may overshoot the limit by one each, which is fine for a safety limit.
"""

from __future__ import annotations

from multiprocessing.sharedctypes import RawArray


class ConnectionBudget:
    """Open-stream counter with a limit. ``slot`` is this process's row in the table."""

    def __init__(self, limit: int, slots: int = 1) -> None:
        self.limit = limit
        self._pids = RawArray("q", slots)
        self._counts = RawArray("q", slots)
        self.slot = 0

    # -- master side --------------------------------------------------------------------

    def assign_slot(self) -> int:
        """Pick a free slot for a worker about to be forked (call in the master)."""
        for index, pid in enumerate(self._pids):
            if pid == 0:
                self._pids[index] = -1  # reserved until the worker claims it
                return index
        raise RuntimeError("no free connection-budget slot; raise the slot count")

    def release_slot(self, slot: int) -> None:
        """Free the slot of a worker that exited (call in the master)."""
        self._pids[slot] = 0
        self._counts[slot] = 0

    # -- worker side --------------------------------------------------------------------

    def claim(self, slot: int, pid: int) -> None:
        """Make ``slot`` this worker's row."""
        self.slot = slot
        self._pids[slot] = pid
        self._counts[slot] = 0

    def try_acquire(self) -> bool:
        """Count one more stream unless the instance is at its limit."""
        if self.total() >= self.limit:
            return False
        self._counts[self.slot] += 1
        return True

    def release(self) -> None:
        if self._counts[self.slot] > 0:
            self._counts[self.slot] -= 1

    def total(self) -> int:
        """Open streams of the whole instance."""
        return sum(self._counts)
