"""Health probes: a worker proves that messages go through its pipeline, and reconnects
its reader when they stop coming."""

from __future__ import annotations

import pytest

from tests.support.waiting import wait_until


@pytest.fixture
def engine(make_engine):
    engine = make_engine(health_probe_seconds=0.1, reader_block_ms=20)
    engine.start()
    yield engine
    engine.stop()


def test_a_worker_sees_its_own_probes_come_through(engine):
    wait_until(lambda: engine.probe.last_seen_at is not None, 5, message="a probe")

    assert engine.probe.healthy()
    assert engine.probe.age() < 1
    assert engine.probe.round_trip_seconds is not None
    assert engine.stats.delivered == 0  # no client got one


def test_probes_are_counted_apart_from_published_messages(engine, fake_redis):
    wait_until(lambda: engine.probe.last_seen_at is not None, 5, message="a probe")

    counters = fake_redis.hgetall(engine.store.keys.stats)

    assert int(counters[b"probes"]) >= 1
    assert int(counters.get(b"published", 0)) == 0


def test_a_worker_whose_probes_stop_coming_is_unhealthy_and_reconnects(engine, monkeypatch):
    wait_until(lambda: engine.probe.last_seen_at is not None, 5, message="a probe")
    health_when_reconnected = []
    monkeypatch.setattr(engine.reader, "reconnect",
                        lambda: health_when_reconnected.append(engine.probe.healthy()))
    # The reader no longer routes anything back (as when attached to a demoted primary).
    monkeypatch.setattr(engine.reader, "on_probe", None)

    wait_until(lambda: health_when_reconnected, 5, message="the reader to be reconnected")
    assert health_when_reconnected[0] is False  # /health said so until then
    assert engine.probe.healthy()  # the new connection gets two intervals to prove itself


def test_another_workers_probe_is_not_ours(engine):
    wait_until(lambda: engine.probe.last_seen_at is not None, 5, message="a probe")
    seen = engine.probe.last_seen_at

    from pushservice.store import Entry

    engine.probe.seen(Entry(1, 0, "e", ("~probe",), "probe", b'{"probe":"other"}', 0))

    assert engine.probe.last_seen_at == seen


def test_probes_off_means_always_healthy(make_engine):
    engine = make_engine(health_probe_seconds=0)
    engine.start()
    try:
        assert not engine.probe.enabled and engine.probe.healthy() and engine.probe.age() is None
    finally:
        engine.stop()
