"""Routing in the hub: entries go to the local connections whose topics match, each at
most once; broadcasts reach everyone; expired entries reach no one; a full queue
disconnects its connection without holding up the others."""

from __future__ import annotations

import time

import pytest

from pushservice.hub import Backoff, Hub
from pushservice.position import Position
from pushservice.store import Entry, Store
from pushservice.subscription import CloseReason, Subscription

EPOCH = "ep1"


@pytest.fixture
def hub(settings):
    return Hub(settings, Store(settings))


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


def test_expired_entries_reach_no_one(hub):
    subscription = subscribe(hub, "news")
    now_ms = int(time.time() * 1000)

    hub.route([entry(1, "news", expires_at_ms=now_ms - 1000),
               entry(2, "news", expires_at_ms=now_ms + 60_000),
               entry(3, "*", expires_at_ms=now_ms - 1)])

    assert received(subscription) == [2]
    assert hub.stats.expired_skipped == 2


def test_route_moves_the_hub_position_even_past_skipped_entries(hub):
    hub.epoch = EPOCH
    now_ms = int(time.time() * 1000)

    hub.route([entry(1, "nobody", ms=now_ms - 5), entry(2, "news", ms=now_ms - 5,
                                                           expires_at_ms=1)])

    assert hub.last_key == (now_ms - 5, 2)
    assert hub.position == Position(EPOCH, now_ms - 5, 2)
    assert hub.stats.routed_entries == 2


def test_route_takes_the_epoch_of_the_entries(hub):
    hub.epoch = "old"

    hub.route([entry(1, "news", epoch="new")])

    assert hub.epoch == "new"


def test_lag_is_the_age_of_the_newest_routed_entry(hub):
    now_ms = int(time.time() * 1000)

    hub.route([entry(1, "news", ms=now_ms - 9000), entry(2, "news", ms=now_ms - 2000)])

    assert 1.9 <= hub.lag_seconds < 3
    hub.route([entry(3, "news", ms=now_ms + 10_000)])  # a clock ahead of ours
    assert hub.lag_seconds == 0


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
    hub.epoch = EPOCH
    hub.last_key = (1700000000000, 4)

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


class FakeStore:
    def __init__(self, epoch: str, last: tuple[int, int]) -> None:
        self.epoch = epoch
        self.last = last

    def current_epoch(self, client=None) -> str:
        return self.epoch

    def head_key(self, client=None) -> tuple[int, int]:
        return self.last


def test_reader_starts_after_the_newest_entry(settings):
    hub = Hub(settings, FakeStore("ep", (1700000000000, 3)))

    hub._resync(client=None)

    assert hub.position == Position("ep", 1700000000000, 3)


def test_reader_keeps_its_place_after_an_outage_of_the_same_stream(settings):
    store = FakeStore("ep", (1700000000000, 3))
    hub = Hub(settings, store)
    hub._resync(client=None)
    hub.last_key = (1700000000500, 0)
    store.last = (1700000009999, 0)  # written while the reader was away: not skipped

    hub._resync(client=None)

    assert hub.position == Position("ep", 1700000000500, 0)


def test_reader_reads_a_recreated_stream_from_its_start(settings):
    store = FakeStore("ep", (1700000000000, 3))
    hub = Hub(settings, store)
    hub._resync(client=None)
    store.epoch = "ep2"

    hub._resync(client=None)

    assert hub.position == Position("ep2", 0, 0)


def test_backoff_grows_with_jitter_up_to_its_cap():
    backoff = Backoff(base=0.1, cap=1.0)

    delays = [backoff.next_delay() for _ in range(8)]

    ceilings = [min(1.0, 0.1 * 2**n) for n in range(8)]
    assert all(ceiling / 2 <= d <= ceiling for d, ceiling in zip(delays, ceilings))
    backoff.reset()
    assert 0.05 <= backoff.next_delay() <= 0.1
