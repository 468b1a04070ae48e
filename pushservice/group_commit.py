"""Group commit: concurrent publishes of one worker share Redis round trips.

With nothing in flight, a publish is written at once: no added latency. Publishes that
arrive while a write is in flight wait for it, then all of them go to Redis together in
one script call (still all-or-nothing, still idempotent when retried). Each caller gets
exactly its own results, or the error of the write that carried its messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import gevent
from gevent.event import AsyncResult

from ..message import Message
from ..store import Published

# Messages per round trip at most: bounds how long one script holds Redis.
MAX_MESSAGES_PER_WRITE = 2000


class _Request:
    __slots__ = ("messages", "result")

    def __init__(self, messages: Sequence[Message]) -> None:
        self.messages = messages
        self.result = AsyncResult()


class GroupCommit:
    """Coalesces concurrent ``publish`` calls into as few ``write`` calls as possible.

    ``write(messages)`` stores messages all or none and returns one Published each.
    """

    def __init__(self, write: Callable[[Sequence[Message]], list[Published]],
                 max_messages: int = MAX_MESSAGES_PER_WRITE) -> None:
        self._write = write
        self._max_messages = max_messages
        self._waiting: deque[_Request] = deque()
        self._writing = False

    def publish(self, messages: Sequence[Message]) -> list[Published]:
        """Store ``messages`` (all or none) and return where each went."""
        request = _Request(messages)
        self._waiting.append(request)
        if not self._writing:
            self._drain(until=request)
        return request.result.get()

    def _drain(self, until: _Request | None = None) -> None:
        """Write what is waiting, in groups. With ``until``, stop once that request is
        done and hand what is left to a fresh greenlet, so the caller answers at once."""
        self._writing = True
        try:
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

    def _take_group(self) -> list[_Request]:
        group = [self._waiting.popleft()]
        count = len(group[0].messages)
        while self._waiting and count + len(self._waiting[0].messages) <= self._max_messages:
            request = self._waiting.popleft()
            group.append(request)
            count += len(request.messages)
        return group

    def _write_group(self, group: list[_Request]) -> None:
        messages = [message for request in group for message in request.messages]
        try:
            results = self._write(messages)
        except BaseException as exc:
            for request in group:
                request.result.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for request in group:
            end = start + len(request.messages)
            request.result.set(results[start:end])
            start = end
