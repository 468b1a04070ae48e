"""The per-worker registry of connections and the one reader greenlet that feeds them.

The reader blocks on XREAD from a concrete last-read id, routes every entry to the
queues of the local connections whose topics match (each connection at most once per
entry) and never dies: on Redis failures it backs off with jitter and resumes from the
last id it routed, so nothing is lost or repeated. A second greenlet sends heartbeats.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Collection

import gevent
from gevent.event import Event

from .errors import StoreUnavailableError
from .message import BROADCAST_TOPIC
from .position import Position
from .settings import Settings
from .stats import WorkerStats
from .store import Entry, Store
from .subscription import CloseReason, Heartbeat, Subscription

log = logging.getLogger(__name__)

class Backoff:
    """Exponential backoff with full jitter, from ``base`` up to ``cap`` seconds."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Hub:
    """Connections of this worker, indexed by topic, fed by one reader greenlet.

    Call ``start()`` in the worker process after fork (never in a gunicorn master).
    ``stats`` collects this worker's counters (a fresh WorkerStats by default).
    """

    def __init__(self, settings: Settings, store: Store,
                 stats: WorkerStats | None = None) -> None:
        self.settings = settings
        self.store = store
        self.subscriptions: dict[str, Subscription] = {}
        self._by_topic: dict[str, set[Subscription]] = {}
        self.epoch: str | None = None
        self.last_key: tuple[int, int] = (0, 0)
        self.stats = stats or WorkerStats()
        self.ready = Event()
        self.started_at: float | None = None
        self.last_read_ok: float | None = None
        self.last_error: str | None = None
        self.lag_seconds = 0.0
        self._greenlets: list[gevent.Greenlet] = []
        self._pid: int | None = None
        self._closing_all = False

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader and heartbeat greenlets once per process. Idempotent."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self.started_at = time.time()
        self._greenlets = [
            gevent.spawn(self._read_forever),
            gevent.spawn(self._heartbeat_forever),
        ]

    @property
    def started(self) -> bool:
        return self._pid == os.getpid()

    def reader_alive(self) -> bool:
        return bool(self._greenlets) and not self._greenlets[0].dead

    def stop(self) -> None:
        """Stop the greenlets (connections are not closed; see ``close_all``)."""
        gevent.killall(self._greenlets, block=True, timeout=2)
        self._greenlets = []
        self._pid = None

    def close_all(self, reason: str, spread_seconds: float = 0.0,
                  retry_ms: tuple[int, int] | None = None) -> gevent.Greenlet:
        """Close every connection with ``reason``, spread over ``spread_seconds`` so that
        their clients do not all reconnect in the same instant. Each final frame carries
        a reconnect delay drawn from ``retry_ms`` (default: around SSE_RETRY_MS)."""
        self._closing_all = True
        low, high = retry_ms or (self.settings.sse_retry_ms // 2,
                                 self.settings.sse_retry_ms * 2)
        subscriptions = list(self.subscriptions.values())
        random.shuffle(subscriptions)

        def close_spread() -> None:
            pause = spread_seconds / len(subscriptions) if subscriptions else 0
            for subscription in subscriptions:
                subscription.close(reason, {"retry_ms": random.randint(low, max(low, high))})
                if pause:
                    gevent.sleep(pause)

        return gevent.spawn(close_spread)

    # -- connections --------------------------------------------------------------------

    def register(self, subscription: Subscription) -> Position:
        """Route live entries to ``subscription`` from now on.

        Returns the position up to which this worker has routed: the subscription gets
        every entry after it, and nothing before it (that is what replay is for).
        """
        self.subscriptions[subscription.id] = subscription
        for topic in subscription.topics:
            self._by_topic.setdefault(topic, set()).add(subscription)
        if self._closing_all:
            subscription.close(CloseReason.SHUTDOWN, {"retry_ms": self.settings.sse_retry_ms})
        return self.position

    def unregister(self, subscription: Subscription) -> None:
        if self.subscriptions.pop(subscription.id, None) is None:
            return
        for topic in subscription.topics:
            group = self._by_topic.get(topic)
            if group is not None:
                group.discard(subscription)
                if not group:
                    del self._by_topic[topic]

    @property
    def position(self) -> Position:
        return Position(self.epoch or "0", *self.last_key)

    def connection_count(self) -> int:
        return len(self.subscriptions)

    # -- the reader ---------------------------------------------------------------------

    def _read_forever(self) -> None:
        backoff = Backoff(0.05, 5.0)
        client = None
        resync = True
        while True:
            try:
                if client is None:
                    client = self.store.reader_client()
                if resync:
                    self._resync(client)
                    resync = False
                    self.last_read_ok = time.time()
                    self.ready.set()
                entries = self.store.read(client, self.last_key, self.settings.reader_block_ms,
                                          self.settings.reader_batch_size)
                self.last_read_ok = time.time()
                self.last_error = None
                backoff.reset()
                if entries:
                    self.route(entries)
                else:
                    self.lag_seconds = 0.0
            except gevent.GreenletExit:
                raise
            except StoreUnavailableError as exc:
                self._note_failure(str(exc))
                resync = True
                gevent.sleep(backoff.next_delay())
            except Exception as exc:  # the reader must never die
                log.exception("reader failed; retrying")
                self._note_failure(f"{type(exc).__name__}: {exc}")
                resync = True
                if client is not None:
                    client.close()
                    client = None
                gevent.sleep(backoff.next_delay())

    def _note_failure(self, message: str) -> None:
        if self.last_error is None:
            log.warning("reader lost Redis: %s", message)
        self.last_error = message
        self.stats.read_errors += 1

    def _resync(self, client) -> None:
        """Find where to read from after start or after an outage.

        The first time, start at the stream's newest entry. Later, keep the last routed
        id unless the stream was recreated (its epoch changed): then every entry of the
        new stream is new to us, so read it from the beginning.
        """
        epoch = self.store.current_epoch(client)
        if self.epoch is None:
            self.last_key = self.store.head_key(client)
            self.epoch = epoch
            log.info("reader starts after %s-%s (epoch %s)", *self.last_key, epoch)
        elif epoch != self.epoch:
            log.warning("stream epoch changed %s -> %s: reading the new stream from its start",
                        self.epoch, epoch)
            self.epoch = epoch
            self.last_key = (0, 0)

    def route(self, entries: list[Entry]) -> int:
        """Offer each entry to every matching local subscription, once. Returns the
        number of frames offered."""
        by_topic = self._by_topic
        everyone = self.subscriptions
        now_ms = time.time() * 1000
        offered = 0
        for entry in entries:
            if entry.expired(now_ms):
                self.stats.expired_skipped += 1
                continue
            topics = entry.topics
            # Nothing below switches greenlets, so the sets cannot change under us.
            if BROADCAST_TOPIC in topics:
                targets: Collection[Subscription] = everyone.values()
            else:
                groups = [group for topic in topics if (group := by_topic.get(topic))]
                if not groups:
                    continue
                targets = groups[0] if len(groups) == 1 else set().union(*groups)
            for subscription in targets:
                if not subscription.offer(entry):
                    self.stats.slow_consumers += 1
            offered += len(targets)
        last = entries[-1]
        self.last_key = (last.ms, last.seq)
        if last.epoch != self.epoch:
            self.epoch = last.epoch
        self.lag_seconds = max(0.0, now_ms - last.ms) / 1000
        self.stats.routed_entries += len(entries)
        self.stats.offered_frames += offered
        return offered

    # -- heartbeats ---------------------------------------------------------------------

    def _heartbeat_forever(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            gevent.sleep(interval)
            heartbeat = Heartbeat(self.position)
            for subscription in list(self.subscriptions.values()):
                subscription.offer(heartbeat)
