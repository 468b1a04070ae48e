"""Routing in the hub: entries go to the local connections whose topics match, each at
most once; broadcasts reach everyone; expired entries reach no one; a full queue
disconnects its connection without holding up the others."""

from __future__ import annotations

import time

import pytest

from pushservice.engine.hub import Hub
from pushservice.engine.position import Position
from pushservice.engine.stats import WorkerStats
from pushservice.engine.subscription import CloseReason, Heartbeat, Subscription
from pushservice.store import Entry
from tests.support.waiting import wait_until

EPOCH = "ep1"


@pytest.fixture
def hub(settings):
    return Hub(settings, WorkerStats())


def entry(seq: int, *topics: str, ms: int | None = None, expires_at_ms: int = 0,
          epoch: str = EPOCH) -> Entry:
    ms = int(time.time() * 1000) if ms is None else ms
    return Entry(ms, seq, epoch, topics, "info", b'{"seq":%d}' % seq, expires_at_ms)


def subscribe(hub: Hub, *topics: str, queue_size: int = 100) -> Subscription:
    subscription = Subscription(topics, queue_size)
    hub.register(subscription)
    return subscription


def received(subscription: Subscription) -> list[int]:
    return [item.seq for item in list(subscription.queue.queue) if isinstance(item, Entry)]


def test_matching_subscription_gets_an_entry_once_even_when_several_topics_match(hub):
    both = subscribe(hub, "user:u1", "service:svc", "session:s1")

    hub.route([entry(1, "user:u1", "session:s1", "service:svc")])

    assert received(both) == [1]


def test_each_matching_subscription_gets_the_entry(hub):
    user = subscribe(hub, "user:u1")
    service = subscribe(hub, "service:svc")
    both = subscribe(hub, "user:u1", "service:svc")

    offered = hub.route([entry(1, "user:u1", "service:svc")])

    assert [received(s) for s in (user, service, both)] == [[1], [1], [1]]
    assert offered == 3


def test_non_matching_subscriptions_get_nothing(hub):
    other = subscribe(hub, "user:u2")
    channel = subscribe(hub, "news")

    hub.route([entry(1, "user:u1", "service:svc")])

    assert received(other) == []
    assert received(channel) == []


def test_broadcast_reaches_every_subscription(hub):
    subscriptions = [subscribe(hub, f"user:{n}") for n in range(5)]
    subscriptions.append(subscribe(hub, "news", "user:9"))

    offered = hub.route([entry(1, "*")])

    assert [received(s) for s in subscriptions] == [[1]] * 6
    assert offered == 6


def test_entries_reach_a_subscription_in_stream_order(hub):
    subscription = subscribe(hub, "news", "user:u1")

    hub.route([entry(1, "news"), entry(2, "user:u1"), entry(3, "other"), entry(4, "*"),
               entry(5, "news", "user:u1")])

    assert received(subscription) == [1, 2, 4, 5]


def test_entries_of_many_services_on_one_channel_are_offered_together(hub, monkeypatch):
    channel = subscribe(hub, "ingest")
    other = subscribe(hub, "news")
    mailbox_operations = []
    for name in ("offer", "offer_many"):
        method = getattr(Subscription, name)
        monkeypatch.setattr(Subscription, name, lambda self, item, method=method, name=name: (
            mailbox_operations.append(name), method(self, item))[1])

    offered = hub.route([entry(seq, "ingest", f"service:s{seq % 3}") for seq in range(1, 7)]
                        + [entry(7, "news"), entry(8, "ingest", "service:s9"),
                           entry(9, "ingest", "news")])

    assert received(channel) == [1, 2, 3, 4, 5, 6, 8, 9]
    assert received(other) == [7, 9]
    # one mailbox operation for 1-6, then one for each entry that reaches another group
    assert mailbox_operations == ["offer_many", "offer", "offer", "offer", "offer"]
    assert offered == 10


def test_expired_entries_reach_no_one(hub):
    subscription = subscribe(hub, "news")
    now_ms = int(time.time() * 1000)

    hub.route([entry(1, "news", expires_at_ms=now_ms - 1000),
               entry(2, "news", expires_at_ms=now_ms + 60_000),
               entry(3, "*", expires_at_ms=now_ms - 1)])

    assert received(subscription) == [2]
    assert hub.stats.expired_skipped == 2


def test_route_moves_the_hub_position_even_past_skipped_entries(hub):
    now_ms = int(time.time() * 1000)

    hub.route([entry(1, "nobody", ms=now_ms - 5), entry(2, "news", ms=now_ms - 5,
                                                           expires_at_ms=1)])

    assert hub.position == Position(EPOCH, now_ms - 5, 2)
    assert hub.stats.routed_entries == 2


def test_route_takes_the_epoch_of_the_entries(hub):
    hub.move_to(Position("old", 0, 0))

    hub.route([entry(1, "news", epoch="new")])

    assert hub.position.epoch == "new"


def test_a_full_queue_disconnects_that_subscriber_only(hub):
    slow = subscribe(hub, "news", queue_size=2)
    fast = subscribe(hub, "news")

    hub.route([entry(n, "news") for n in range(1, 6)])

    assert slow.closing == CloseReason.SLOW_CONSUMER
    assert received(slow) == [1, 2]
    assert fast.closing is None
    assert received(fast) == [1, 2, 3, 4, 5]
    assert hub.stats.slow_consumers == 1


def test_stats_count_routed_entries_and_offered_frames(hub):
    subscribe(hub, "news")
    subscribe(hub, "news", "user:u1")

    hub.route([entry(1, "news"), entry(2, "user:u1"), entry(3, "other")])

    assert hub.stats.routed_entries == 3
    assert hub.stats.offered_frames == 3


def test_register_returns_the_position_routed_so_far(hub):
    hub.move_to(Position(EPOCH, 1700000000000, 4))

    position = hub.register(Subscription(("news",), 10))

    assert position == Position(EPOCH, 1700000000000, 4)


def test_register_before_the_reader_knows_its_epoch(hub):
    assert hub.register(Subscription(("news",), 10)) == Position("0", 0, 0)


def test_unregistered_subscription_gets_nothing_more(hub):
    subscription = subscribe(hub, "news", "user:u1")
    other = subscribe(hub, "news")
    hub.unregister(subscription)
    hub.unregister(subscription)  # twice is harmless

    hub.route([entry(1, "news"), entry(2, "*")])

    assert received(subscription) == []
    assert received(other) == [1, 2]
    assert hub.connection_count() == 1


def test_connection_count(hub):
    subscriptions = [subscribe(hub, "news") for _ in range(3)]
    assert hub.connection_count() == 3

    hub.unregister(subscriptions[0])

    assert hub.connection_count() == 2


def test_close_all_closes_every_connection_with_a_retry_hint(hub, settings):
    subscriptions = [subscribe(hub, "news") for _ in range(4)]

    hub.close_all(CloseReason.SHUTDOWN, retry_ms=(100, 200)).join(timeout=5)

    for subscription in subscriptions:
        assert subscription.closing == CloseReason.SHUTDOWN
        assert 100 <= subscription.close_detail["retry_ms"] <= 200


def test_a_connection_arriving_during_shutdown_is_closed_at_once(hub, settings):
    hub.close_all(CloseReason.SHUTDOWN).join(timeout=5)

    late = subscribe(hub, "news")

    assert late.closing == CloseReason.SHUTDOWN
    assert late.close_detail == {"retry_ms": settings.sse_retry_ms}


def test_connections_are_found_by_id_and_listed_by_kind(hub):
    user = Subscription(("user:u1",), 10, kind="user")
    hub.register(user)
    hub.register(Subscription(("news",), 10, kind="stream"))

    assert hub.get(user.id) is user
    assert hub.get("c-unknown") is None
    status = hub.status()
    assert status.connections == 2
    assert status.connections_by_kind == {"user": 1, "stream": 1}
    assert status.position == hub.position


def test_heartbeats_reach_every_connection_with_the_hub_position(settings):
    hub = Hub(settings.replace(heartbeat_interval=0.05), WorkerStats())
    subscriptions = [subscribe(hub, "news") for _ in range(3)]
    hub.move_to(Position(EPOCH, 1700000000000, 1))
    hub.start()
    try:
        wait_until(lambda: all(len(s.queue.queue) >= 2 for s in subscriptions), 5,
                   message="two heartbeats each")
    finally:
        hub.stop()
    for subscription in subscriptions:
        beat = subscription.queue.queue[-1]
        assert isinstance(beat, Heartbeat) and beat.position == hub.position
