"""Opening and closing streams (web/streams.py) on fakeredis: every step of an open is
undone when a later one fails, and closing lets everything go once."""

from __future__ import annotations

import pytest

from pushservice.engine import event_stream
from pushservice.errors import ServiceUnavailableError, StoreUnavailableError
from pushservice.ops.capacity import ConnectionBudget
from pushservice.ops.registry import ConnectionRegistry
from pushservice.store import ConnectionRecords, ControlStore, DeploymentRecords
from pushservice.web import streams as streams_module
from pushservice.web.streams import Streams


@pytest.fixture
def make_streams(make_engine):
    def make(**changes) -> Streams:
        engine = make_engine(**changes)
        engine.reader.ready.set()  # as if it had found its place in the stream
        redis, keys = engine.store.connections, engine.store.keys
        registry = ConnectionRegistry(engine, ConnectionRecords(redis, keys),
                                      DeploymentRecords(redis, keys), ControlStore(redis, keys))
        return Streams(engine, registry, ConnectionBudget(engine.settings.max_connections))

    return make


def held(streams: Streams) -> tuple[int, int, int]:
    """What open streams hold: budget, registry records (once written), hub connections."""
    streams.registry.write_pending()
    return (streams.budget.total(), len(streams.registry.list()["connections"]),
            streams.hub.connection_count())


def test_an_open_stream_holds_its_slot_its_record_and_its_place(make_streams):
    streams = make_streams()

    stream = streams.open(("user:u1",), kind="user", user="u1", remote_addr="10.0.0.1")

    assert held(streams) == (1, 1, 1)
    assert streams.hub.get(stream.subscription.id) is stream.subscription
    (record,) = streams.registry.list()["connections"]
    assert record["user"] == "u1" and record["remote_addr"] == "10.0.0.1"


def test_closing_a_stream_lets_everything_go_once(make_streams):
    streams = make_streams()
    stream = streams.open(("user:u1",), user="u1")

    stream.close()
    stream.close()

    assert held(streams) == (0, 0, 0)
    assert streams.registry.stats.connections_closed == 1


def test_a_full_instance_refuses_with_nothing_left_behind(make_streams):
    streams = make_streams(max_connections=1)
    streams.open(("news",))

    with pytest.raises(ServiceUnavailableError) as refused:
        streams.open(("news",))

    assert refused.value.code == "too_many_connections"
    assert held(streams) == (1, 1, 1)


def test_a_stream_over_its_users_limit_is_closed_and_lets_everything_go(make_streams):
    streams = make_streams(max_connections_per_user=1)
    streams.open(("user:u1",), user="u1")
    second = streams.open(("user:u1",), user="u1")  # opens at once: Redis is not asked

    streams.registry.write_pending()

    assert second.subscription.closing == "too_many_user_connections"
    assert list(second)[-1].startswith(b"retry: ")  # the final frame says when to return
    second.close()  # as the server does once the body ends
    assert held(streams) == (1, 1, 1)


def test_a_stream_opens_while_redis_is_away(make_streams, monkeypatch):
    streams = make_streams()

    def down(*args, **kwargs):
        raise StoreUnavailableError("Redis is unavailable")

    monkeypatch.setattr(streams.registry.records, "admit", down)
    stream = streams.open(("news",))

    assert stream.subscription.closing is None
    assert streams.hub.connection_count() == 1


def test_a_failure_after_registering_undoes_every_step(make_streams, monkeypatch):
    streams = make_streams()

    def broken(*args, **kwargs):
        raise RuntimeError("the event stream could not be built")

    monkeypatch.setattr(streams_module, "EventStream", broken)
    with pytest.raises(RuntimeError):
        streams.open(("user:u1",), user="u1")

    assert held(streams) == (0, 0, 0)


def test_a_worker_not_ready_yet_refuses(make_streams, monkeypatch):
    streams = make_streams()
    streams.engine.reader.ready.clear()
    monkeypatch.setattr(streams_module, "READY_WAIT_SECONDS", 0.05)

    with pytest.raises(ServiceUnavailableError) as refused:
        streams.open(("news",))

    assert refused.value.code == "not_ready"
    assert held(streams) == (0, 0, 0)


def test_a_stream_takes_the_queue_size_asked_for(make_streams):
    streams = make_streams()

    assert streams.open(("news",)).subscription.queue.maxsize == \
        streams.settings.connection_queue_size
    assert streams.open(("news",), queue_size=7).subscription.queue.maxsize == 7


def test_the_event_stream_hands_its_end_to_the_streams(make_streams):
    streams = make_streams()
    stream = streams.open(("news",))

    assert isinstance(stream, event_stream.EventStream)
    assert stream.context.on_close == streams.close
