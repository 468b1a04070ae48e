"""The connection registry on fakeredis: admitting (per-user limit), forgetting, renewing,
listing with filters and cursors, deployment-wide stats, and closing a connection
wherever it lives."""

from __future__ import annotations

import time

import gevent
import pytest

from pushservice.engine.subscription import CloseReason, Subscription
from pushservice.errors import NotFoundError, StoreUnavailableError
from pushservice.ops.registry import ConnectionRegistry, worker_id
from pushservice.store import ConnectionRecords, ControlStore, DeploymentRecords


@pytest.fixture
def make_registry(make_engine):
    def make(**changes) -> ConnectionRegistry:
        engine = make_engine(**changes)
        redis, keys = engine.store.connections, engine.store.keys
        return ConnectionRegistry(engine, ConnectionRecords(redis, keys),
                                  DeploymentRecords(redis, keys), ControlStore(redis, keys))

    return make


@pytest.fixture
def registry(make_registry) -> ConnectionRegistry:
    return make_registry(max_connections_per_user=2)


def stream(user: str | None = "u1", topics=("user:u1",), kind: str = "user") -> Subscription:
    return Subscription(tuple(topics), 10, kind=kind, user=user)


def open_(registry: ConnectionRegistry, subscription: Subscription) -> Subscription:
    """Admit and register ``subscription``, and write the registry as its loop would."""
    registry.admit(subscription, remote_addr="127.0.0.1", user_agent="test")
    registry.hub.register(subscription)
    registry.write_pending()
    return subscription


def close(registry: ConnectionRegistry, subscription: Subscription) -> None:
    registry.hub.unregister(subscription)
    registry.remove(subscription)
    registry.write_pending()


def refused_for_user_limit(subscription: Subscription, limit: int) -> None:
    """The stream was told it is over its user's limit, and when to come back."""
    assert subscription.closing == "too_many_user_connections"
    detail = subscription.close_detail
    assert detail["refused"] is True and detail["details"] == {"limit": limit}
    assert detail["retry_ms"] > 0 and "MAX_CONNECTIONS_PER_USER" in detail["message"]


# -- one connection ---------------------------------------------------------------------


def test_an_admitted_connection_is_recorded_with_what_operators_see(registry):
    subscription = open_(registry, stream())

    (record,) = registry.list()["connections"]

    assert record["connection_id"] == subscription.id
    assert record["user"] == "u1" and record["kind"] == "user"
    assert record["topics"] == ["user:u1"]
    assert record["instance"] == registry.settings.instance_name
    assert record["remote_addr"] == "127.0.0.1" and record["user_agent"] == "test"
    assert record["frames_sent"] == 0 and record["last_event_id"] is None
    assert abs(record["connected_at"] - time.time()) < 60


def test_a_stream_over_its_users_limit_is_told_to_come_back_later(registry):
    open_(registry, stream())
    open_(registry, stream())

    third = open_(registry, stream())

    refused_for_user_limit(third, 2)
    assert len(registry.list()["connections"]) == 2  # the refused one left no record


def test_a_closed_stream_gives_its_user_the_slot_back(registry):
    first = open_(registry, stream())
    open_(registry, stream())

    close(registry, first)

    assert open_(registry, stream()).closing is None  # admitted again
    refused_for_user_limit(open_(registry, stream()), 2)


def test_the_limit_counts_each_user_apart(registry):
    for _ in range(2):
        open_(registry, stream("u1"))
    # another user is not affected
    assert open_(registry, stream("u2", topics=("user:u2",))).closing is None


def test_streams_without_a_user_are_never_limited(registry):
    for _ in range(5):
        open_(registry, stream(user=None, topics=("news",), kind="stream"))

    assert registry.list()["count"] == 5


def test_a_limit_of_zero_means_no_limit(make_registry):
    registry = make_registry(max_connections_per_user=0)
    for _ in range(30):
        open_(registry, stream())

    assert registry.list(limit=1000)["count"] == 30


def test_slots_of_a_dead_worker_free_themselves_when_their_ttl_runs_out(
        make_registry, fake_redis):
    registry = make_registry(max_connections_per_user=1, registry_ttl_seconds=0.3)
    open_(registry, stream())
    time.sleep(0.35)  # nobody renews: the worker is gone
    # fakeredis expires keys lazily on access, as Redis expires scores by the admit script
    assert open_(registry, stream()).closing is None


def test_removing_forgets_the_record_and_counts_the_close(registry):
    subscription = open_(registry, stream())

    close(registry, subscription)

    assert registry.list()["connections"] == []
    assert registry.records.get(subscription.id) is None
    assert registry.stats.connections_opened == 1
    assert registry.stats.connections_closed == 1


# -- renewing ---------------------------------------------------------------------------


def test_renewal_keeps_records_alive_and_reports_frames_and_position(make_registry):
    registry = make_registry(registry_ttl_seconds=0.6, registry_refresh_seconds=0.2)
    subscription = open_(registry, stream())
    subscription.frames_sent = 7
    subscription.position.epoch = "ep1"
    subscription.position.key = (1700000000000, 3)

    for _ in range(4):  # longer than the TTL in all, renewed within it each time
        time.sleep(0.2)
        registry.renew()

    (record,) = registry.list()["connections"]
    assert record["frames_sent"] == 7
    assert record["last_event_id"] == "ep1-1700000000000-3"


def test_a_connection_that_is_not_renewed_disappears(make_registry):
    registry = make_registry(registry_ttl_seconds=0.3, registry_refresh_seconds=0.1)
    open_(registry, stream())

    time.sleep(0.4)

    assert registry.list()["connections"] == []


def test_renewal_publishes_the_worker_snapshot_and_counter_deltas(registry):
    open_(registry, stream())
    registry.stats.delivered += 5

    registry.renew()
    registry.stats.delivered += 2
    registry.renew()

    (snapshot,) = registry.deployment.worker_snapshots()
    assert snapshot["worker_id"] == worker_id(registry.settings)
    assert snapshot["connections"] == 1
    assert snapshot["connections_by_kind"] == {"user": 1}
    assert registry.deployment.counters()["delivered"] == 7  # deltas added, not totals
    assert registry.stream_length == 0


# -- listing ----------------------------------------------------------------------------


def test_listing_filters_by_user_topic_and_instance(registry):
    alice = open_(registry, stream("alice", topics=("user:alice", "news")))
    open_(registry, stream("bob", topics=("user:bob",)))

    assert [r["connection_id"] for r in registry.list(user="alice")["connections"]] == [
        alice.id]
    assert [r["connection_id"] for r in registry.list(topic="news")["connections"]] == [
        alice.id]
    assert registry.list(instance="elsewhere")["connections"] == []
    assert registry.list(instance=registry.settings.instance_name)["count"] == 2


def test_listing_pages_with_a_cursor_oldest_first(make_registry):
    registry = make_registry(max_connections_per_user=0)
    opened = []
    for _ in range(5):
        opened.append(open_(registry, stream()).id)
        time.sleep(0.002)  # ids start with the connect time in milliseconds

    pages, cursor = [], None
    while True:
        page = registry.list(limit=2, cursor=cursor)
        pages.append([r["connection_id"] for r in page["connections"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [cid for page in pages for cid in page] == sorted(opened)


def test_listing_prunes_connections_whose_record_expired(make_registry, fake_redis):
    registry = make_registry(registry_ttl_seconds=0.3)
    open_(registry, stream())
    time.sleep(0.35)

    assert registry.list()["connections"] == []
    assert fake_redis.zcard(registry.records.keys.connections) == 0


# -- stats ------------------------------------------------------------------------------


def test_stats_add_up_every_worker(make_registry):
    # Two instances' workers, as two registries of different instance names.
    first, second = make_registry(instance_name="a"), make_registry(instance_name="b")
    open_(first, stream("a", topics=("user:a",)))
    for _ in range(2):
        open_(second, stream("b", topics=("user:b",)))
    first.stats.delivered = 3
    second.stats.delivered = 4
    second.stats.observe_latency(0.004)
    first.renew()
    second.renew()

    stats = first.deployment_stats()

    assert stats["connections"]["total"] == 3
    assert stats["connections"]["by_instance"] == {"a": 1, "b": 2}
    assert stats["connections"]["by_kind"] == {"user": 3}
    assert stats["messages"]["delivered"] == 7
    assert stats["workers"] == 2
    assert stats["latency"]["samples"] == 1
    assert stats["latency"]["p50_ms"] == 5.0  # the bucket bound the sample falls under


# -- closing anywhere -------------------------------------------------------------------


def test_closing_an_unknown_connection_is_404(registry):
    with pytest.raises(NotFoundError) as caught:
        registry.close_connection("c0000000000000000000")

    assert caught.value.code == "connection_not_found"


def test_a_close_command_closes_the_local_connection_with_a_reason(registry):
    subscription = open_(registry, stream())

    registry.handle({"op": "close", "connection_id": subscription.id})

    assert subscription.closing == CloseReason.KICKED
    assert subscription.close_detail["retry_ms"] == registry.settings.sse_retry_ms


def test_commands_for_other_workers_or_unknown_ops_are_ignored(registry):
    subscription = open_(registry, stream())

    registry.handle({"op": "close", "connection_id": "c-elsewhere"})
    registry.handle({"op": "reboot", "connection_id": subscription.id})

    assert subscription.closing is None


def test_close_connection_is_confirmed_once_its_worker_let_it_go(registry, monkeypatch):
    subscription = open_(registry, stream())
    sent = []

    def deliver(command):
        # What the worker owning the connection does when the command reaches it.
        sent.append(command)
        registry.handle(command)
        gevent.spawn_later(0.05, close, registry, subscription)
        return 1

    monkeypatch.setattr(registry.control, "send", deliver)

    result = registry.close_connection(subscription.id)

    assert sent == [{"op": "close", "connection_id": subscription.id}]
    assert result == {"connection_id": subscription.id, "found": True, "closed": True,
                      "instance": registry.settings.instance_name,
                      "worker": result["worker"]}


def test_close_connection_says_when_the_client_is_not_gone_yet(registry, monkeypatch):
    subscription = open_(registry, stream())
    monkeypatch.setattr(registry.control, "send", lambda command: 0)
    monkeypatch.setattr("pushservice.ops.registry.CLOSE_CONFIRM_SECONDS", 0.1)

    assert registry.close_connection(subscription.id)["closed"] is False


# -- the records, many at once ----------------------------------------------------------


def record(connection_id: str, user: str | None) -> tuple[dict, str | None]:
    return ({"connection_id": connection_id, "user": user, "topics": ("user:x",)}, user)


def test_a_batch_of_admissions_keeps_each_users_limit_in_order(registry):
    records = registry.records

    admitted = records.admit([record("c1", "u1"), record("c2", "u1"), record("c3", "u2"),
                              record("c4", "u1"), record("c5", None)], 2, 30)

    assert admitted == [True, True, True, False, True]
    assert {r["connection_id"] for r in registry.list()["connections"]} == {
        "c1", "c2", "c3", "c5"}


def test_a_retried_admission_counts_its_connection_once(registry):
    records = registry.records
    assert records.admit([record("c1", "u1")], 1, 30) == [True]

    assert records.admit([record("c1", "u1")], 1, 30) == [True]  # the same call again
    assert records.admit([record("c2", "u1")], 1, 30) == [False]


def test_an_admission_that_reaches_redis_too_late_writes_nothing(registry):
    with pytest.raises(StoreUnavailableError):
        registry.records.admit([record("c1", "u1")], 2, 30, deadline=time.time() - 10)

    assert registry.list()["connections"] == []


def test_a_batch_of_removals_forgets_each(registry):
    records = registry.records
    records.admit([record("c1", "u1"), record("c2", "u1"), record("c3", None)], 2, 30)

    records.remove([("c1", "u1"), ("c3", None)])

    assert [r["connection_id"] for r in registry.list()["connections"]] == ["c2"]
    assert records.admit([record("c4", "u1")], 2, 30) == [True]  # u1's slot came back


def test_a_crowd_arriving_at_once_shares_round_trips(registry, monkeypatch):
    calls = []
    admit = registry.records.admit

    def counted(items, *args, **kwargs):
        calls.append(len(items))
        return admit(items, *args, **kwargs)

    monkeypatch.setattr(registry.records, "admit", counted)
    for _ in range(50):
        registry.admit(stream(user=None, topics=("news",)))  # never waits for Redis
    registry.write_pending()

    assert calls == [50]
    assert registry.list()["count"] == 50


def test_a_stream_that_came_and_went_before_the_write_is_never_written(registry, monkeypatch):
    calls = []
    monkeypatch.setattr(registry.records, "admit", lambda *args: calls.append(args) or [])
    subscription = stream()
    registry.admit(subscription)
    registry.remove(subscription)

    registry.write_pending()

    assert calls == [] and registry.list()["connections"] == []


def test_writes_that_fail_are_kept_and_retried(registry, monkeypatch):
    admit = registry.records.admit

    def down(*args, **kwargs):
        raise StoreUnavailableError("Redis is unavailable")

    monkeypatch.setattr(registry.records, "admit", down)
    registry.admit(stream())
    with pytest.raises(StoreUnavailableError):
        registry.write_pending()
    monkeypatch.setattr(registry.records, "admit", admit)

    registry.write_pending()  # Redis is back

    assert registry.list()["count"] == 1


def test_renewal_leaves_a_connection_alone_until_its_admission_is_written(registry):
    subscription = stream()
    registry.admit(subscription)
    registry.hub.register(subscription)

    registry.renew()

    assert registry.records.get(subscription.id) is None  # no half-written record
    registry.write_pending()
    assert registry.records.get(subscription.id)["connection_id"] == subscription.id
