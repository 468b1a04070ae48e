"""This worker's connections: the topic index, routing, heartbeats and closing.

The reader (reader.py) hands the hub every batch of entries it reads; ``route`` offers
each entry to the mailbox of every local connection it reaches (the rule of topics.py),
each at most once, without blocking: a full mailbox closes that connection as a slow
consumer. ``position`` is how far the hub has routed; a connection registered now gets
every entry after it and nothing before it (that is what replay is for, from the
recent history the hub keeps, or from Redis). A heartbeat
greenlet offers each connection a heartbeat every HEARTBEAT_INTERVAL seconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import gevent

from ..background import Loop
from ..settings import Settings
from .position import Position
from .recent import RecentHistory
from .stats import WorkerStats
from .subscription import CloseReason, Heartbeat, Subscription
from .topics import TopicIndex


@dataclass(frozen=True)
class HubStatus:
    """A snapshot of the hub for the registry, metrics and health."""

    connections: int
    connections_by_kind: dict[str, int]
    position: Position


class _Reached(dict):
    """Each topic list's connections (``reaching``), found once for one routed batch: the
    same collection for topic lists that reach one group of connections (their other
    topics reach none), so that their entries make one run."""

    __slots__ = ("_reaching",)

    def __init__(self, reaching: Callable[[tuple[str, ...]], Collection[Subscription]]) -> None:
        super().__init__()
        self._reaching = reaching

    def __missing__(self, topics: tuple[str, ...]) -> Collection[Subscription]:
        connections = self[topics] = self._reaching(topics)
        return connections


class Hub:
    """Connections of this worker, indexed by topic.

    ``stats`` receives the routing counters. Call ``start()`` in the worker process
    after fork (never in a gunicorn master) to send heartbeats.
    """

    def __init__(self, settings: Settings, stats: WorkerStats) -> None:
        self.settings = settings
        self.stats = stats
        self._index: TopicIndex = TopicIndex()
        self.position = Position("0", 0, 0)
        # What was routed lately, for resumes that need nothing from Redis; never more
        # than the stream itself keeps, so that no resume depends on which worker it hits.
        self.recent = RecentHistory(
            min(settings.recent_history_entries, settings.stream_max_length),
            settings.recent_history_bytes)
        self._heartbeats = Loop(self._heartbeat, "heartbeats")
        self._closing_all = False

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start sending heartbeats. Idempotent."""
        self._heartbeats.start()

    def stop(self) -> None:
        """Stop the heartbeats (connections are not closed; see ``close_all``)."""
        self._heartbeats.stop()

    def close_all(self, reason: str, spread_seconds: float = 0.0,
                  retry_ms: tuple[int, int] | None = None) -> gevent.Greenlet:
        """Close every connection with ``reason``, spread over ``spread_seconds`` so that
        their clients do not all reconnect in the same instant; connections registered
        later are closed at once. Each final frame carries a reconnect delay drawn from
        ``retry_ms`` (default: around SSE_RETRY_MS)."""
        self._closing_all = True
        low, high = retry_ms or (self.settings.sse_retry_ms // 2,
                                 self.settings.sse_retry_ms * 2)
        subscriptions = list(self._index.by_id.values())
        random.shuffle(subscriptions)

        def close_spread() -> None:
            pause = spread_seconds / len(subscriptions) if subscriptions else 0
            for subscription in subscriptions:
                subscription.close(reason, {"retry_ms": random.randint(low, max(low, high))})
                if pause:
                    gevent.sleep(pause)

        return gevent.spawn(close_spread)

    @property
    def closing(self) -> bool:
        """True once ``close_all`` ran: the worker is stopping."""
        return self._closing_all

    # -- connections --------------------------------------------------------------------

    def register(self, subscription: Subscription) -> Position:
        """Route live entries to ``subscription`` from now on.

        Returns the position up to which this worker has routed: the subscription gets
        every entry after it, and nothing before it.
        """
        self._index.add(subscription, subscription.topics)
        if self._closing_all:
            subscription.close(CloseReason.SHUTDOWN, {"retry_ms": self.settings.sse_retry_ms})
        return self.position

    def unregister(self, subscription: Subscription) -> None:
        self._index.remove(subscription, subscription.topics)

    def get(self, connection_id: str) -> Subscription | None:
        """The local connection with this id, if it is one of this worker's."""
        return self._index.by_id.get(connection_id)

    def subscriptions(self) -> list[Subscription]:
        """This worker's connections, as a list that later changes do not affect."""
        return list(self._index.by_id.values())

    def connection_count(self) -> int:
        return len(self._index)

    def status(self) -> HubStatus:
        by_kind: dict[str, int] = {}
        for subscription in self._index.by_id.values():
            by_kind[subscription.kind] = by_kind.get(subscription.kind, 0) + 1
        return HubStatus(len(self._index), by_kind, self.position)

    # -- routing ------------------------------------------------------------------------

    def move_to(self, position: Position) -> None:
        """Route from ``position`` on (the reader found where to read after a start or an
        outage, or the stream was recreated)."""
        self.position = position
        self.recent.restart(position.epoch, position.key)

    def route(self, entries: list) -> int:
        """Offer each entry to every local connection it reaches, once. Returns the number
        of frames offered. ``entries`` is a non-empty batch in stream order.

        Consecutive entries that reach the same connections (a fan-out's usual batch, or
        many services publishing to one channel) are offered to each connection together:
        one mailbox operation, and one wake-up, per connection for the whole run, rather
        than one per entry."""
        found = _Reached(self._index.reaching)
        stats = self.stats
        now_ms = time.time() * 1000
        live = [entry for entry in entries if not entry.expired(now_ms)]
        stats.expired_skipped += len(entries) - len(live)
        offered = 0
        start, count = 0, len(live)
        # Nothing below switches greenlets, so the index cannot change under us.
        while start < count:
            topics = live[start].topics
            targets = found[topics]
            end = start + 1
            while end < count and (live[end].topics == topics
                                   or found[live[end].topics] is targets):
                end += 1
            run = live[start:end] if end - start > 1 else None
            for subscription in targets:
                if not (subscription.offer(live[start]) if run is None
                        else subscription.offer_many(run)):
                    stats.slow_consumers += 1
            offered += len(targets) * (end - start)
            start = end
        last = entries[-1]
        self.position = Position(last.epoch, last.ms, last.seq)
        self.recent.add(entries)
        stats.routed_entries += len(entries)
        stats.offered_frames += offered
        return offered

    # -- heartbeats ---------------------------------------------------------------------

    def _heartbeat(self) -> float:
        heartbeat = Heartbeat(self.position)
        for subscription in self.subscriptions():
            subscription.offer(heartbeat)
        return self.settings.heartbeat_interval
