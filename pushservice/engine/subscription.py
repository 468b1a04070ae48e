"""One SSE connection as the hub sees it: its topics and a bounded gevent queue.

``offer()`` never blocks: when the queue is full, the low-priority messages waiting in
it are let go first (the client is told, in their place, with a ``history-lost`` event of
reason ``low_priority_shed``); when that does not make room the subscription is closed as
a slow consumer (the client resumes with Last-Event-ID). So one stalled client can
neither slow the reader nor grow the worker's memory.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from gevent.hub import Waiter, get_hub
from gevent.queue import Empty, Full
from gevent.timeout import Timeout

from .position import ClientPosition

# Consumers woken per turn of the event loop at most (see WakeQueue).
WAKE_SLICE = 8


class WakeQueue:
    """Wakes waiting consumers a slice at a time, one event-loop callback per slice.

    gevent runs its callbacks first in, first out. A fan-out to thousands of streams
    woken one callback each would put every other callback queued meanwhile (a
    publish's answer coming back through its AsyncResult, a greenlet just spawned)
    behind all of them: publishers waited a fan-out's whole length, hundreds of
    milliseconds, for each step. A slice per callback, queued again at the back while
    consumers wait, lets those run between slices.
    """

    __slots__ = ("_loop", "_pending", "_scheduled", "hub")

    def __init__(self, hub) -> None:
        self.hub = hub
        self._loop = hub.loop
        self._pending: deque[Waiter] = deque()
        self._scheduled = False

    def wake(self, waiter: Waiter) -> None:
        self._pending.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._run)

    def _run(self) -> None:
        pending = self._pending
        try:
            for _ in range(min(WAKE_SLICE, len(pending))):
                pending.popleft().switch(None)  # a Waiter reports its own errors
        finally:
            if pending:
                self._loop.run_callback(self._run)
            else:
                self._scheduled = False


_wakes: WakeQueue | None = None


def wake_queue() -> WakeQueue:
    """This thread's WakeQueue (a new one after a fork, with gevent's new hub)."""
    global _wakes
    hub = get_hub()
    if _wakes is None or _wakes.hub is not hub:
        _wakes = WakeQueue(hub)
    return _wakes


class Mailbox:
    """A bounded gevent queue with a single consumer.

    ``put_nowait`` never blocks (Full beyond ``maxsize``); the consumer blocks its
    greenlet in ``take_all`` until something arrives (Empty after
    ``timeout`` seconds; None waits for ever). ``take_all`` hands over everything
    waiting in one list swap. A list and, while the consumer waits, one gevent Waiter
    that the hub switches to: a few hundred bytes where gevent's Queue costs kilobytes
    (a worker holds one per open stream), and cheaper to wake.
    """

    __slots__ = ("_waiter", "maxsize", "queue")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: list[Any] = []  # waiting items, oldest first
        self._waiter: Waiter | None = None

    def put_nowait(self, item: Any) -> None:
        if len(self.queue) >= self.maxsize:
            raise Full
        self.queue.append(item)
        self._wake()

    def put_many(self, items: list[Any]) -> None:
        """``put_nowait`` for each of ``items`` in order, with one wake-up: Full once the
        queue is full (what fitted is queued; the exception's argument is the rest)."""
        room = self.maxsize - len(self.queue)
        if room < len(items):
            if room > 0:
                self.queue.extend(items[:room])
                self._wake()
            raise Full(items[max(room, 0):])
        self.queue.extend(items)
        self._wake()

    def take_all(self, timeout: float | None = None) -> list[Any]:
        """Everything waiting, oldest first, once at least one item is there."""
        self._wait(timeout)
        items, self.queue = self.queue, []
        return items

    def replace(self, items: list[Any]) -> None:
        """Put ``items`` in place of everything waiting (its owner reorganised them)."""
        self.queue[:] = items
        if items:
            self._wake()

    def put_back(self, items: list[Any]) -> None:
        """Return untaken items to the front of the queue (never counted as full)."""
        if items:
            self.queue[:0] = items
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            # The consumer runs when the hub next runs callbacks: never in the middle of
            # the producer's loop, and a slice at a time (WakeQueue).
            wake_queue().wake(waiter)

    def _wait(self, timeout: float | None) -> None:
        while not self.queue:
            waiter = self._waiter = Waiter()
            try:
                if timeout is None:
                    waiter.get()
                else:
                    with Timeout(timeout, Empty):
                        waiter.get()
            finally:
                if self._waiter is waiter:
                    self._waiter = None


class CloseReason:
    """Why a stream ended; sent to the client in the final ``closing`` frame."""

    SHUTDOWN = "shutdown"
    SLOW_CONSUMER = "slow_consumer"
    REPLAY_LIMIT = "replay_limit"
    KICKED = "closed_by_operator"
    TOKEN_EXPIRED = "token_expired"
    # The client hung up: nobody is left to read a final frame.
    CLIENT_GONE = "client_gone"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A periodic keep-alive; ``position`` is where the stream stood when it was sent."""

    position: Any


# Put in a queue only to wake its consumer so it notices ``closing``.
WAKE = object()


class Shed:
    """Where low-priority messages were let go of to make room in a full mailbox: the
    client is told, in their place (``count`` messages, event ids ``first_id`` to
    ``last_id``)."""

    __slots__ = ("count", "first_id", "last_id")

    def __init__(self) -> None:
        self.count = 0
        self.first_id: str | None = None
        self.last_id: str | None = None

    def add(self, item: Any) -> None:
        self.count += 1
        if self.first_id is None:
            self.first_id = item.event_id
        self.last_id = item.event_id


def _is_low(item: Any) -> bool:
    return getattr(item, "priority", None) == "low"


def new_connection_id() -> str:
    """Unique across workers and instances, and ordered by connect time (listings page
    through connections in that order): milliseconds in hex, then 40 random bits."""
    return f"c{int(time.time() * 1000):011x}{secrets.token_hex(5)}"


class Subscription:
    """A live connection's routing state.

    ``topics`` is what it subscribes to (broadcasts always reach it). ``named`` says
    whether its frames carry the ``event:`` field. ``position`` is where its client
    stands in the stream (set when it is registered with the hub). ``closing`` holds the
    reason once the connection has been told to end, with ``close_detail`` for the client.
    """

    __slots__ = (
        "ack_user",
        "close_detail",
        "closing",
        "connected_at",
        "frames_sent",
        "id",
        "kind",
        "named",
        "position",
        "queue",
        "topics",
        "user",
    )

    def __init__(self, topics: tuple[str, ...], queue_size: int, named: bool = True,
                 kind: str = "stream", user: str | None = None) -> None:
        self.id = new_connection_id()
        self.topics = topics
        self.named = named
        self.queue = Mailbox(queue_size)
        self.closing: str | None = None
        self.close_detail: dict[str, Any] = {}
        self.kind = kind
        self.user = user
        self.connected_at = time.time()
        self.frames_sent = 0
        self.position = ClientPosition("0")
        # The user whose messages this stream delivers and acknowledges (its own
        # ``user:`` topic), for delivery confirmation; None for other streams.
        self.ack_user = user if user is not None and f"user:{user}" in topics else None

    def offer(self, item: Any) -> bool:
        """Queue ``item`` without blocking. A full queue closes the subscription as a slow
        consumer; False means this offer did that."""
        try:
            self.queue.put_nowait(item)
            return True
        except Full:
            return self._overflowed([item])

    def offer_many(self, items: list[Any]) -> bool:
        """``offer`` for each of ``items`` in order, at the cost of one."""
        try:
            self.queue.put_many(items)
            return True
        except Full as full:
            return self._overflowed(full.args[0] if full.args else items)

    def _overflowed(self, rest: list[Any]) -> bool:
        if self.closing is not None:
            return True  # already on its way out
        if self._shed_low(rest):
            return True
        self.close(CloseReason.SLOW_CONSUMER, {"queue_size": self.queue.maxsize})
        return False

    def _shed_low(self, rest: list[Any]) -> bool:
        """Make room by letting the low-priority messages go (a Shed marker tells the
        client in their place), then queue ``rest``, whose own low-priority messages go
        too when they do not fit. False when the rest still does not fit."""
        mailbox = self.queue
        kept: list[Any] = []
        markers = 0  # Shed markers do not count against the bound: they replace items
        shed: Shed | None = None
        for item in mailbox.queue:
            if _is_low(item):
                if shed is None:
                    shed = Shed()
                    kept.append(shed)
                    markers += 1
                shed.add(item)
            else:
                kept.append(item)
        if shed is None and not any(_is_low(item) for item in rest):
            return False
        for item in rest:
            if len(kept) - markers < mailbox.maxsize:
                kept.append(item)
            elif _is_low(item):
                if type(kept[-1]) is not Shed:
                    kept.append(Shed())
                    markers += 1
                kept[-1].add(item)
            else:
                return False
        mailbox.replace(kept)
        return True

    def close(self, reason: str, detail: dict[str, Any] | None = None) -> None:
        """Ask the connection to end with a final frame giving ``reason``. Idempotent."""
        if self.closing is not None:
            return
        self.closing = reason
        self.close_detail = detail or {}
        try:
            self.queue.put_nowait(WAKE)
        except Full:
            # The consumer is not waiting on an empty queue; it checks ``closing``
            # before it takes the next item.
            pass
