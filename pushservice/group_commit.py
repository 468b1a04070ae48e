"""Group commit: concurrent calls of one worker share Redis round trips.

With nothing in flight, a call is written by its own greenlet, at once or after one
turn of the event loop that lets calls arriving with it join (when such turns have been
gathering companions; see GATHER_WORTH). Calls that arrive while a write is in flight
wait for it, then go to Redis together in one write. Each caller gets exactly its own
results, or the error of the write that carried its items. Publishes (all or none per
call, idempotent when retried) and stream admissions (a storm of clients arriving at
once) both go through one.

A call may have a deadline: if it is still waiting when the deadline passes it is taken
out of the queue and fails with ``CallTimedOutError`` (nothing of it was written); a
call whose write is in flight fails the same way, and the write itself is told the
earliest deadline of what it carries (``write(items, deadline)``) so that it can refuse
to take effect after it (publishing does, in its Lua script).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult

from .background import ONE_TURN_SECONDS

T = TypeVar("T")
R = TypeVar("R")

# Items per write at most: bounds how long one write holds Redis.
MAX_ITEMS_PER_WRITE = 2000

# A call that finds nothing in flight may first let the event loop turn once, so that
# calls whose requests arrived with it share its write (32 publishers each sending one
# message at a time: 12 calls per write instead of 1, a fifth more messages per second).
# A turn lasts as long as what the loop does meanwhile: 15 ms while thousands of streams
# are woken, for one or two companions. So a call turns only while recent turns gathered
# at least GATHER_WORTH companions on average; otherwise it writes at once, and every
# PROBE_EVERY-th such call turns anyway, to notice when callers crowd in again.
GATHER_WORTH = 4.0
PROBE_EVERY = 256


class CallTimedOutError(Exception):
    """The call's deadline passed before its write completed; ``queued`` is True when it
    was never sent."""

    def __init__(self, queued: bool) -> None:
        super().__init__("deadline passed while " + ("waiting" if queued else "writing"))
        self.queued = queued


class _Call(Generic[T]):
    __slots__ = ("deadline", "items", "result")

    def __init__(self, items: Sequence[T], deadline: float | None) -> None:
        self.items = items
        self.deadline = deadline
        self.result = AsyncResult()


class GroupCommit(Generic[T, R]):
    """Coalesces concurrent ``submit`` calls into as few ``write`` calls as possible.

    ``write(items, deadline)`` stores items (all or none, as the caller needs) and
    returns one result per item; ``deadline`` is the earliest deadline of the calls it
    carries (``time.time()`` seconds) or None.
    """

    def __init__(self, write: Callable[[Sequence[T], float | None], list[R]],
                 max_items: int = MAX_ITEMS_PER_WRITE) -> None:
        self._write = write
        self._max_items = max_items
        self._waiting: deque[_Call[T]] = deque()
        self._writing = False
        self._companions = GATHER_WORTH  # gathered by recent turns (moving average)
        self._lone_writes = 0  # calls written at once since the last turn

    def submit(self, items: Sequence[T], timeout: float | None = None) -> list[R]:
        """Write ``items`` (sharing the round trip with concurrent calls) and return one
        result each. With ``timeout`` seconds, CallTimedOutError once it passes."""
        call = _Call(items, None if timeout is None else time.time() + timeout)
        self._waiting.append(call)
        if not self._writing:
            self._drain(until=call)
        try:
            return call.result.get(timeout=None if call.deadline is None
                                   else max(0.0, call.deadline - time.time()))
        except gevent.Timeout:
            queued = call in self._waiting
            if queued:
                self._waiting.remove(call)
            raise CallTimedOutError(queued) from None

    def _drain(self, until: _Call[T] | None = None) -> None:
        """Write what is waiting, in groups. With ``until``, stop once that call is done
        and hand what is left to a fresh greenlet, so the caller answers at once."""
        self._writing = True
        try:
            if until is not None:
                self._gather()
            while self._waiting:
                self._write_group(self._take_group())
                if until is not None and until.result.ready() and self._waiting:
                    break
        finally:
            if self._waiting:
                # Others are waiting (or this greenlet is being killed): keep writing.
                gevent.spawn(self._drain)
            else:
                self._writing = False

    def _gather(self) -> None:
        """Let the calls that arrived with this one join it, when that has been worth a
        turn of the event loop (see GATHER_WORTH)."""
        if self._companions < GATHER_WORTH:
            self._lone_writes += 1
            if self._lone_writes < PROBE_EVERY:
                return
        self._lone_writes = 0
        gevent.sleep(ONE_TURN_SECONDS)  # requests that arrived meanwhile
        found = len(self._waiting) - 1
        # A crowd is believed at once; turns that find few lower the average slowly.
        self._companions = max(found, self._companions + 0.2 * (found - self._companions))

    def _take_group(self) -> list[_Call[T]]:
        group = [self._waiting.popleft()]
        count = len(group[0].items)
        while self._waiting and count + len(self._waiting[0].items) <= self._max_items:
            call = self._waiting.popleft()
            group.append(call)
            count += len(call.items)
        return group

    def _write_group(self, group: list[_Call[T]]) -> None:
        items = [item for call in group for item in call.items]
        deadlines = [call.deadline for call in group if call.deadline is not None]
        try:
            results = self._write(items, min(deadlines) if deadlines else None)
        except BaseException as exc:
            for call in group:
                call.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for call in group:
            end = start + len(call.items)
            call.result.set(results[start:end])
            start = end
