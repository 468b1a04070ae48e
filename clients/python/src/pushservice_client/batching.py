"""Batching by itself: concurrent ``send()`` calls share one ``/batch`` request.

Each ``send()`` puts its message in a queue and waits for its own outcome. A sender
(a background thread, or a task for the async client) takes what is queued as one
batch. Before taking it, it waits up to ``linger`` seconds from the first queued
message for other callers to join; it stops waiting early when

- the batch is full (``max_batch`` messages), or
- every caller it expects is already in: as many messages are queued or in flight as
  were at any flush during the last second or two. So a steady set of callers (32
  threads each sending in a loop, say) is batched without waiting out the linger, a
  lone caller sending in a loop pays no linger after its first message, and a burst
  after a quiet spell waits the linger to gather.

Up to ``max_in_flight`` batches are in flight at once; meanwhile the queue fills, so
under load batches grow by themselves and a caller never waits for a timer.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ClientClosedError, ConfigurationError
from .messages import Published
from .protocol import Outcome

# How long a flush's observed concurrency is remembered (seconds per window; the
# current and the previous window count).
_WINDOW_SECONDS = 1.0


class Concurrency:
    """How many messages were queued or in flight at recent flushes: the number of
    callers the sender can expect to join a batch. 0 when nothing was flushed lately."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self._current = 0
        self._previous = 0

    def _roll(self, now: float) -> None:
        elapsed = now - self._start
        if elapsed >= _WINDOW_SECONDS:
            self._previous = self._current if elapsed < 2 * _WINDOW_SECONDS else 0
            self._current = 0
            self._start = now

    def observe(self, count: int) -> None:
        """A flush happened with ``count`` messages queued or in flight."""
        self._roll(self._clock())
        self._current = max(self._current, count)

    def expected(self) -> int:
        """The most messages queued or in flight at a flush in the last window or two."""
        self._roll(self._clock())
        return max(self._current, self._previous)


def check_options(linger: float, max_batch: int, max_in_flight: int) -> None:
    """Raise ConfigurationError for options batching cannot work with."""
    if linger < 0:
        raise ConfigurationError("linger must be >= 0 seconds")
    if max_batch < 1:
        raise ConfigurationError("max_batch_size must be >= 1")
    if max_in_flight < 1:
        raise ConfigurationError("max_in_flight must be >= 1")


# -- threads ------------------------------------------------------------------------------


class _Waiting(Outcome):
    """A queued message whose caller blocks on a lock until it is settled (a bare lock
    is the cheapest thing to block a thread on)."""

    __slots__ = ("_done",)

    def __init__(self, message: dict[str, Any], deadline_at: float) -> None:
        super().__init__(message, deadline_at)
        self._done = threading.Lock()
        self._done.acquire()

    def wake(self) -> None:
        self._done.release()

    def wait(self, timeout: float) -> Published:
        if not self._done.acquire(timeout=timeout):
            raise TimeoutError("no outcome for this message (the client's sender is stuck)")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


Deliver = Callable[[Sequence[Outcome], Callable[..., None]], None]


class ThreadBatcher:
    """Batches ``submit()`` calls from any number of threads.

    ``deliver(items, settle)`` publishes one batch (in a sender thread) and calls
    ``settle`` with the outcome of each item. Sender threads start on first use and
    stop on ``close()``, which first sends what is queued.
    """

    def __init__(self, deliver: Deliver, *, linger: float, max_batch: int,
                 max_in_flight: int, name: str = "pushservice-sender") -> None:
        check_options(linger, max_batch, max_in_flight)
        self._deliver = deliver
        self.linger = linger
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._name = name
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._collecting = threading.Lock()  # one sender gathers at a time: no split cohorts
        self._queue: list[_Waiting] = []
        self._queued_at = 0.0
        self._in_flight = 0
        self._concurrency = Concurrency()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._running = False
        _BATCHERS.add(self)

    def submit(self, message: dict[str, Any], deadline_at: float, wait_limit: float) -> Published:
        """Queue ``message`` and block until it is published; returns its result or
        raises its own error. ``wait_limit`` bounds the wait (a safety net: the sender
        settles every message within its deadline plus one request timeout)."""
        item = _Waiting(message, deadline_at)
        with self._lock:
            if self._closed:
                raise ClientClosedError("the client is closed")
            if not self._running:
                self._start_senders()
            queue = self._queue
            queue.append(item)
            if len(queue) == 1:
                self._queued_at = time.monotonic()
                self._arrived.notify()
            elif len(queue) >= self.max_batch or self._all_in():
                self._arrived.notify()
        return item.wait(wait_limit)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, then stop the sender threads (waiting up to ``timeout``
        seconds for them). New ``submit()`` calls raise ClientClosedError."""
        with self._lock:
            self._closed = True
            self._arrived.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # -- internals ------------------------------------------------------------------------

    def _all_in(self) -> bool:
        expected = self._concurrency.expected()
        return expected > 0 and len(self._queue) + self._in_flight >= expected

    def _start_senders(self) -> None:
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        while len(self._threads) < self.max_in_flight:
            thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._running = True

    def _forget_senders(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._collecting = threading.Lock()
        self._threads = []
        self._running = False
        self._in_flight = 0
        self._queue = []  # their callers are threads of the parent

    def _run(self) -> None:
        while True:
            with self._collecting:
                batch = self._collect()
            if batch is None:
                return
            try:
                self._deliver(batch, self._settle)
            except BaseException as exc:  # noqa: BLE001 - each caller must hear of it
                self._settle([(item, None, exc) for item in batch if not _settled(item)])

    def _collect(self) -> list[_Waiting] | None:
        with self._lock:
            free_at = time.monotonic()
            while not self._queue:
                if self._closed:
                    return None
                self._arrived.wait()
            # The linger counts from when this sender could send: messages queued while
            # every sender was busy still give the expected others a moment to join.
            flush_at = max(self._queued_at, free_at) + self.linger
            while (len(self._queue) < self.max_batch and not self._closed
                   and not self._all_in()):
                left = flush_at - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            self._concurrency.observe(len(self._queue) + self._in_flight)
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
            if self._queue:
                self._queued_at = time.monotonic()
                self._arrived.notify()  # another sender may take the rest
            self._in_flight += len(batch)
            return batch

    def _settle(self, outcomes: Sequence[tuple[Outcome, Published | None, BaseException | None]]
                ) -> None:
        # Out of flight before anyone wakes, so a woken caller's next message is not
        # counted twice by _all_in().
        with self._lock:
            self._in_flight -= len(outcomes)
        for item, result, error in outcomes:
            item.result, item.error = result, error
            item.wake()  # type: ignore[attr-defined]


# After a fork the parent's sender threads do not exist in the child: each batcher
# starts its own again on first use there.
_BATCHERS: weakref.WeakSet[ThreadBatcher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for batcher in list(_BATCHERS):
        batcher._forget_senders()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _settled(item: Outcome) -> bool:
    return item.result is not None or item.error is not None


# -- asyncio ------------------------------------------------------------------------------


class _Awaiting(Outcome):
    __slots__ = ("future",)

    def __init__(self, message: dict[str, Any], deadline_at: float,
                 future: asyncio.Future[Published]) -> None:
        super().__init__(message, deadline_at)
        self.future = future


AsyncDeliver = Callable[[Sequence[Outcome], Callable[..., None]], Any]


class AsyncBatcher:
    """Batches ``submit()`` calls from any number of coroutines of one event loop.

    ``deliver(items, settle)`` is a coroutine function that publishes one batch and
    calls ``settle`` with each item's outcome. The dispatching task starts on first
    use; ``aclose()`` sends what is queued and waits for the batches in flight.
    """

    def __init__(self, deliver: AsyncDeliver, *, linger: float, max_batch: int,
                 max_in_flight: int) -> None:
        check_options(linger, max_batch, max_in_flight)
        self._deliver = deliver
        self.linger = linger
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: list[_Awaiting] = []
        self._queued_at = 0.0
        self._in_flight = 0
        self._concurrency = Concurrency()
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, message: dict[str, Any], deadline_at: float) -> Published:
        """Queue ``message`` and wait until it is published; returns its result or
        raises its own error."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        loop = asyncio.get_running_loop()
        if self._dispatcher is None or self._dispatcher.done():
            self._arrived = asyncio.Event()
            self._slots = asyncio.Semaphore(self.max_in_flight)
            self._dispatcher = loop.create_task(self._dispatch())
        item = _Awaiting(message, deadline_at, loop.create_future())
        self._queue.append(item)
        if len(self._queue) == 1:
            self._queued_at = time.monotonic()
            self._arrived.set()  # type: ignore[union-attr]
        elif len(self._queue) >= self.max_batch or self._all_in():
            self._arrived.set()  # type: ignore[union-attr]
        return await item.future

    async def aclose(self) -> None:
        """Send what is queued, wait for every batch in flight, stop dispatching."""
        self._closed = True
        if self._arrived is not None:
            self._arrived.set()
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _all_in(self) -> bool:
        expected = self._concurrency.expected()
        return expected > 0 and len(self._queue) + self._in_flight >= expected

    async def _dispatch(self) -> None:
        arrived, slots = self._arrived, self._slots
        assert arrived is not None and slots is not None
        while True:
            await slots.acquire()  # wait for a free slot first: the queue fills meanwhile
            free_at = time.monotonic()
            while not self._queue:
                if self._closed:
                    slots.release()
                    return
                arrived.clear()
                await arrived.wait()
            flush_at = max(self._queued_at, free_at) + self.linger
            while (len(self._queue) < self.max_batch and not self._closed
                   and not self._all_in()):
                left = flush_at - time.monotonic()
                if left <= 0:
                    break
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), left)
                except TimeoutError:
                    break
            self._concurrency.observe(len(self._queue) + self._in_flight)
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
            self._queued_at = time.monotonic()
            self._in_flight += len(batch)
            task = asyncio.get_running_loop().create_task(self._send(batch, slots))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Awaiting], slots: asyncio.Semaphore) -> None:
        try:
            await self._deliver(batch, self._settle)
        except BaseException as exc:
            self._settle([(item, None, exc) for item in batch if not item.future.done()])
            if not isinstance(exc, Exception):
                raise
        finally:
            slots.release()

    def _settle(self, outcomes: Sequence[tuple[Outcome, Published | None, BaseException | None]]
                ) -> None:
        self._in_flight -= len(outcomes)
        for item, result, error in outcomes:
            future = item.future  # type: ignore[attr-defined]
            if future.done():  # its caller was cancelled
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
