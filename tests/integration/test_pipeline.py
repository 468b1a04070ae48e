"""Publish -> Redis Stream -> reader greenlet -> connection, against a real redis-server."""

from __future__ import annotations

import json
import time

import gevent
import pytest
import redis

from pushservice.engine.position import parse_event_id
from pushservice.errors import StoreUnavailableError
from tests.support.pipeline import message
from tests.support.waiting import wait_until

# Stream semantics: every test runs on the embedded Redis 6.2 and on Redis 7.x.
pytestmark = pytest.mark.redis_versions


def _numbers(frames) -> list[int]:
    return [frame.json()["data"]["n"] for frame in frames]


def _first_kept(pipeline) -> int:
    """The number of the oldest message the stream still holds."""
    client = redis.Redis.from_url(pipeline.settings.redis_url)
    (_, fields), = client.xrange(pipeline.store.stream_key, count=1)
    return int(json.loads(fields[b"m"])["data"]["n"])


def _wait_routed(pipeline, published) -> None:
    """Until the reader has passed ``published``: connections opened later start after it."""
    wait_until(lambda: pipeline.hub.position.key >= published.position.key, 10, interval=0.01,
               message="the reader to route the message")


def test_published_message_reaches_each_matching_connection_once(make_pipeline):
    pipeline = make_pipeline()
    both = pipeline.subscribe("user:1", "service:svc")
    user_only = pipeline.subscribe("user:1")
    other = pipeline.subscribe("user:2")

    (published,) = pipeline.publish(message(1))

    assert _numbers(both.wait_messages(1)) == [1]
    assert _numbers(user_only.wait_messages(1)) == [1]
    frame = both.messages()[0]
    assert frame.id == published.position.event_id
    assert frame.event == "progress"
    gevent.sleep(0.3)  # give a wrong delivery the chance to show up
    assert len(both.messages()) == 1
    assert other.messages() == []


def test_broadcast_reaches_every_connection(make_pipeline):
    pipeline = make_pipeline()
    readers = [pipeline.subscribe(f"user:{n}") for n in range(5)]
    pipeline.publish({"type": "info", "service": "svc", "data": {"n": 7}}, broadcast=True)
    for reader in readers:
        assert _numbers(reader.wait_messages(1)) == [7]


def test_chinese_text_arrives_byte_for_byte(make_pipeline):
    pipeline = make_pipeline()
    reader = pipeline.subscribe("user:123")
    text = "正在生成向量嵌入..."
    pipeline.publish({"type": "progress", "service": "knowledge-service",
                      "target": {"user_id": "123"}, "data": {"progress": 65, "message": text}})
    (frame,) = reader.wait_messages(1)
    assert frame.json()["data"]["message"] == text


def test_replay_after_a_gap_sends_what_was_missed_in_order(make_pipeline):
    pipeline = make_pipeline()
    published = pipeline.publish(*[message(n) for n in range(1, 11)])
    resume_from = published[3].position.event_id  # the client saw 1..4

    reader = pipeline.subscribe("user:1", last_event_id=resume_from)
    assert _numbers(reader.wait_messages(6)) == [5, 6, 7, 8, 9, 10]

    pipeline.publish(message(11))
    assert _numbers(reader.wait_messages(7)) == [5, 6, 7, 8, 9, 10, 11]
    assert not any(frame.event == "history-lost" for frame in reader.frames)


def test_replay_skips_other_topics_but_moves_the_resume_point(make_pipeline):
    pipeline = make_pipeline()
    first = pipeline.publish(message(1))
    others = pipeline.publish(*[message(n, user_id="2") for n in range(2, 6)])
    _wait_routed(pipeline, others[-1])
    reader = pipeline.subscribe("user:1", last_event_id=first[0].position.event_id)
    last = others[-1].position

    def moved_past_them(client) -> bool:
        # At or past the last of them: the worker's own health probe may come after it.
        position = parse_event_id(client.parser.last_event_id)
        return position.epoch == last.epoch and position.key >= last.key

    reader.wait(moved_past_them)
    assert reader.messages() == []


def test_seam_between_replay_and_live_has_no_gap_and_no_duplicate(make_pipeline):
    pipeline = make_pipeline()
    total = 400
    ids: list[str] = []

    def publish_all() -> None:
        for n in range(1, total + 1):
            ids.append(pipeline.publish(message(n))[0].position.event_id)
            if n % 20 == 0:
                gevent.sleep(0.001)

    publisher = gevent.spawn(publish_all)
    deadline = time.monotonic() + 10
    while len(ids) < 50 and time.monotonic() < deadline:
        gevent.sleep(0.001)
    # Resume while the publisher keeps going: part replay, part live, seam in between.
    reader = pipeline.subscribe("user:1", last_event_id=ids[49])
    publisher.join(timeout=30)
    assert publisher.successful()
    assert _numbers(reader.wait_messages(total - 50, timeout=15)) == list(range(51, total + 1))
    gevent.sleep(0.2)
    assert len(reader.messages()) == total - 50


def test_a_worker_that_just_started_resumes_recent_clients_from_memory(make_pipeline,
                                                                       monkeypatch):
    published = make_pipeline().publish(*[message(n) for n in range(1, 51)])
    restarted = make_pipeline()  # a new worker, after a deploy

    def no_redis():
        raise AssertionError("a resume close to now asked Redis")

    monkeypatch.setattr(restarted.store, "stream_info", no_redis)
    monkeypatch.setattr(restarted.store, "read_range", lambda *args: no_redis())
    reader = restarted.subscribe("user:1", last_event_id=published[39].position.event_id)

    assert _numbers(reader.wait_messages(10)) == list(range(41, 51))
    assert not any(f.event == "history-lost" for f in reader.frames)


def test_fresh_connection_gets_a_resume_point_that_loses_nothing(make_pipeline):
    pipeline = make_pipeline()
    pipeline.publish(message(1))
    first = pipeline.subscribe("user:1")
    first.wait(lambda r: any(f.event == "connected" for f in r.frames))
    resume_point = first.parser.last_event_id
    assert resume_point, "the connected frame carries an id"
    first.close()

    pipeline.publish(message(2), message(3))  # published while the client was away
    again = pipeline.subscribe("user:1", last_event_id=resume_point)
    assert _numbers(again.wait_messages(2)) == [2, 3]


def test_trimmed_history_is_announced_then_replayed_from_the_oldest_kept(make_pipeline):
    pipeline = make_pipeline(stream_max_length=100)
    published = []
    for start in range(1, 601, 100):  # trimming keeps about the newest 100-200
        published += pipeline.publish(*[message(n) for n in range(start, start + 100)])
    first_kept = _first_kept(pipeline)
    assert 1 < first_kept < 600

    reader = pipeline.subscribe("user:1", last_event_id=published[2].position.event_id)
    assert _numbers(reader.wait_messages(601 - first_kept)) == list(range(first_kept, 601))
    (lost,) = [f for f in reader.frames if f.event == "history-lost"]
    assert lost.json()["reason"] == "history_trimmed"
    assert lost.json()["resumes_from"] == published[first_kept - 1].position.event_id
    assert reader.frames.index(lost) < reader.frames.index(reader.messages()[0])


def test_one_by_one_publishes_trimmed_to_100_announce_the_loss(make_pipeline):
    # As a service publishes: one message per request, the stream capped at 100 entries.
    pipeline = make_pipeline(stream_max_length=100)
    published = [pipeline.publish(message(n))[0] for n in range(1, 1001)]
    first_kept = _first_kept(pipeline)

    reader = pipeline.subscribe("user:1", last_event_id=published[0].position.event_id)

    assert _numbers(reader.wait_messages(1001 - first_kept)) == list(range(first_kept, 1001))
    (lost,) = [f for f in reader.frames if f.event == "history-lost"]
    assert lost.json()["reason"] == "history_trimmed"


def test_resuming_from_the_newest_trimmed_entry_is_no_false_alarm(make_pipeline):
    pipeline = make_pipeline(stream_max_length=100)
    published = [pipeline.publish(message(n))[0] for n in range(1, 601)]
    first_kept = _first_kept(pipeline)
    assert first_kept > 2

    exact = pipeline.subscribe("user:1", last_event_id=published[first_kept - 2].position.event_id)
    older = pipeline.subscribe("user:1", last_event_id=published[first_kept - 3].position.event_id)

    assert _numbers(exact.wait_messages(601 - first_kept)) == list(range(first_kept, 601))
    assert not any(f.event == "history-lost" for f in exact.frames)
    older.wait_messages(601 - first_kept)
    assert [f.json()["reason"] for f in older.frames if f.event == "history-lost"] == [
        "history_trimmed"]


def test_resuming_inside_the_kept_history_after_trims_loses_nothing(make_pipeline):
    pipeline = make_pipeline(stream_max_length=100)
    published = []
    for start in range(1, 601, 100):
        published += pipeline.publish(*[message(n) for n in range(start, start + 100)])
    reader = pipeline.subscribe("user:1", last_event_id=published[589].position.event_id)
    assert _numbers(reader.wait_messages(10)) == list(range(591, 601))
    assert not any(f.event == "history-lost" for f in reader.frames)


def test_a_client_that_connected_to_an_empty_stream_resumes_without_a_false_alarm(
        make_pipeline):
    pipeline = make_pipeline()
    first = pipeline.subscribe("user:1")
    first.wait(lambda r: any(f.event == "connected" for f in r.frames))
    position = first.parser.last_event_id
    first.close()
    pipeline.publish(message(1), message(2))
    again = pipeline.subscribe("user:1", last_event_id=position)
    assert _numbers(again.wait_messages(2)) == [1, 2]
    assert not any(f.event == "history-lost" for f in again.frames)


def test_stream_length_is_bounded_on_every_write(make_pipeline):
    pipeline = make_pipeline(stream_max_length=100)
    for start in range(0, 2000, 100):
        pipeline.publish(*[message(n) for n in range(start, start + 100)])
    client = redis.Redis.from_url(pipeline.settings.redis_url)
    # Approximate trimming removes whole nodes of 100 entries: a little over the limit.
    assert client.xlen(pipeline.store.stream_key) <= 300


def test_expired_message_is_never_replayed(make_pipeline):
    pipeline = make_pipeline()
    start = pipeline.publish(message(0))
    expired = message(1)
    expired["metadata"] = {"ttl": 5}
    pipeline.publish(expired, now=time.time() - 60)  # its 5 s ran out a minute ago
    pipeline.publish(message(2))
    reader = pipeline.subscribe("user:1", last_event_id=start[0].position.event_id)
    assert _numbers(reader.wait_messages(1)) == [2]


def test_unknown_or_malformed_last_event_id_is_announced_not_ignored(make_pipeline):
    pipeline = make_pipeline()
    (first,) = pipeline.publish(message(1))
    _wait_routed(pipeline, first)
    malformed = pipeline.subscribe("user:1", last_event_id="not-an-id\x7f")
    malformed.wait(lambda r: any(f.event == "history-lost" for f in r.frames))
    lost = next(f for f in malformed.frames if f.event == "history-lost")
    assert lost.json()["reason"] == "malformed_last_event_id"
    pipeline.publish(message(2))
    assert _numbers(malformed.wait_messages(1)) == [2]


def test_id_from_another_epoch_gets_history_lost(make_pipeline):
    pipeline = make_pipeline()
    old = pipeline.publish(message(1))[0].position.event_id
    redis.Redis.from_url(pipeline.settings.redis_url).flushdb()  # Redis lost everything
    pipeline.publish(message(2), message(3))

    reader = pipeline.subscribe("user:1", last_event_id=old)
    assert _numbers(reader.wait_messages(2)) == [2, 3]
    lost = next(f for f in reader.frames if f.event == "history-lost")
    assert lost.json()["reason"] == "stream_reset"
    assert not reader.parser.last_event_id.startswith(old.split("-")[0] + "-")


def _raw_entry(client, pipeline, entry_id: str, epoch: str, previous: str) -> None:
    """An entry for a topic nobody subscribes to, at an id of the test's choosing."""
    client.xadd(pipeline.store.stream_key, {"h": f"{epoch} custom 0 user:nobody",
                                            "m": "{}", "p": previous, "b": "0"}, id=entry_id)


def test_a_stream_recreated_under_the_reader_is_read_from_its_start(make_pipeline):
    # The new stream's ids start again from the clock: here its first entries sit at and
    # below the last id the reader routed, so a read after that id passes over them.
    # Without health probes: they would write between the steps that set the ids up.
    pipeline = make_pipeline(health_probe_seconds=0)
    client = redis.Redis.from_url(pipeline.settings.redis_url)
    reader = pipeline.subscribe("user:1")
    (first,) = pipeline.publish(message(1))
    future_ms = int(time.time() * 1000) + 60_000
    _raw_entry(client, pipeline, f"{future_ms}-5", first.epoch, first.stream_id)
    wait_until(lambda: pipeline.hub.position.key == (future_ms, 5), 10, interval=0.01,
               message="the reader to route the old stream's last entry")
    client.flushdb()  # the connections stay open
    client.set(pipeline.store.epoch_key, "e2e2e2e2")
    _raw_entry(client, pipeline, f"{future_ms}-0", "e2e2e2e2", "0-0")
    published = pipeline.publish(*(message(n) for n in range(2, 8)))
    assert [p.position.key for p in published] == [(future_ms, n) for n in range(1, 7)]

    assert _numbers(reader.wait_messages(7)) == [1, 2, 3, 4, 5, 6, 7]
    lost = next(f for f in reader.frames if f.event == "history-lost")
    assert lost.json()["reason"] == "stream_reset"
    assert reader.messages()[1].id == f"e2e2e2e2-{future_ms}-1"


def test_a_stream_that_lost_only_its_epoch_repeats_nothing(make_pipeline):
    pipeline = make_pipeline()
    reader = pipeline.subscribe("user:1")
    pipeline.publish(message(1), message(2))
    assert _numbers(reader.wait_messages(2)) == [1, 2]
    redis.Redis.from_url(pipeline.settings.redis_url).delete(pipeline.store.epoch_key)
    (third,) = pipeline.publish(message(3))
    assert third.epoch != reader.messages()[0].id.split("-")[0]

    assert _numbers(reader.wait_messages(3)) == [1, 2, 3]
    gevent.sleep(0.3)  # give a repeat the chance to show up
    assert _numbers(reader.messages()) == [1, 2, 3]


def test_client_chosen_id_is_delivered_once(make_pipeline):
    pipeline = make_pipeline()
    reader = pipeline.subscribe("user:1")
    first = message(1)
    first["id"] = "order-42-shipped"
    again = dict(first, data={"n": 2})
    (one,) = pipeline.publish(first)
    (two,) = pipeline.publish(again)
    assert not one.duplicate and two.duplicate
    assert two.position == one.position
    pipeline.publish(message(3))
    assert _numbers(reader.wait_messages(2)) == [1, 3]


def test_reader_recovers_when_redis_restarts(make_pipeline, make_redis_server):
    server = make_redis_server(appendonly=True)
    pipeline = make_pipeline(server.url(0))
    reader = pipeline.subscribe("user:1")
    pipeline.publish(message(1))
    assert _numbers(reader.wait_messages(1)) == [1]

    server.kill()
    wait_until(lambda: pipeline.reader.last_error is not None, 10,
               message="the reader to notice the outage")
    assert pipeline.reader.alive
    server.restart(keep_data=True)

    def publish_when_back():
        deadline = time.monotonic() + 15
        while True:
            try:
                return pipeline.publish(message(2))
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    raise
                gevent.sleep(0.1)

    publish_when_back()
    assert _numbers(reader.wait_messages(2, timeout=20)) == [1, 2]
    assert not any(f.event == "history-lost" for f in reader.frames)


def test_reader_recovers_when_redis_comes_back_empty(make_pipeline, make_redis_server):
    server = make_redis_server()
    pipeline = make_pipeline(server.url(0))
    reader = pipeline.subscribe("user:1")
    pipeline.publish(message(1))
    assert _numbers(reader.wait_messages(1)) == [1]

    server.kill()
    server.restart(keep_data=False)
    deadline = time.monotonic() + 15
    while True:
        try:
            pipeline.publish(message(2))
            break
        except StoreUnavailableError:
            assert time.monotonic() < deadline, "Redis did not come back"
            gevent.sleep(0.1)
    assert _numbers(reader.wait_messages(2, timeout=20)) == [1, 2]
    # The connection is told that the stream it was reading no longer exists.
    assert any(f.event == "history-lost" for f in reader.frames)


def test_full_queue_closes_the_slow_connection_not_the_others(make_pipeline):
    pipeline = make_pipeline()
    fast = pipeline.subscribe("user:1")
    slow = pipeline.subscribe("user:1", queue_size=5)
    slow.stop_reading()
    pipeline.publish(*[message(n) for n in range(1, 51)])
    assert len(fast.wait_messages(50)) == 50
    assert slow.subscription.closing == "slow_consumer"
    assert pipeline.stats.slow_consumers == 1
