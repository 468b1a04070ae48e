"""Delivery confirmation through one worker's pipeline on a real redis-server (6.2 and
7.x): the inbox when the stream no longer holds the message, resumes that skip what was
acknowledged, writes recorded, and a slow client's mailbox letting low-priority messages
go first."""

from __future__ import annotations

import time

import pytest

from pushservice.store.acks import AckStore
from tests.support.pipeline import StreamClient
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis_versions


def confirmable(n: int, user: str = "7", **metadata) -> dict:
    return {"type": "info", "service": "svc", "target": {"user_id": user}, "data": {"n": n},
            "metadata": {"require_ack": True, **metadata}}


def plain(n: int, user: str = "7", priority: str = "normal") -> dict:
    return {"type": "info", "service": "svc", "target": {"user_id": user}, "data": {"n": n},
            "metadata": {"priority": priority}}


def user_stream(pipeline, user: str = "7", last_event_id: str | None = None,
                queue_size: int | None = None, read: bool = True):
    stream = pipeline.streams.open((f"user:{user}",), kind="user", user=user,
                                   last_event_id=last_event_id, queue_size=queue_size)
    if not read:
        return stream
    client = StreamClient(stream)
    pipeline.clients.append(client)
    return client


def numbers(frames) -> list[int]:
    return [frame.json()["data"]["n"] for frame in frames]


def acks_of(pipeline) -> AckStore:
    return pipeline.engine.confirmations.store


def test_the_inbox_delivers_what_the_trimmed_stream_no_longer_holds(make_pipeline):
    pipeline = make_pipeline(recent_history_entries=0)  # every resume reads Redis
    before = pipeline.publish(plain(0))[0].event_id
    (waiting,) = pipeline.publish(confirmable(1))
    pipeline.publish(*[plain(n, user="someone") for n in range(2, 5)])
    pipeline.store.client.xtrim(pipeline.store.stream_key, maxlen=1, approximate=False)

    client = user_stream(pipeline, last_event_id=before)
    client.wait(lambda c: any(f.event == "history-lost" for f in c.frames))
    (message,) = client.wait_messages(1)
    assert message.json()["id"] == waiting.message.id
    assert message.json()["metadata"]["retry_count"] == 1 and message.id is None


def test_a_resume_skips_what_the_user_acknowledged(make_pipeline):
    pipeline = make_pipeline()
    before = pipeline.publish(plain(0))[0].event_id
    acknowledged, _ = pipeline.publish(confirmable(1), confirmable(2))
    acks_of(pipeline).acknowledge([acknowledged.message.id], "7", int(time.time() * 1000))
    pipeline.publish(plain(3))

    client = user_stream(pipeline, last_event_id=before)
    assert numbers(client.wait_messages(2)) == [2, 3]
    time.sleep(0.3)  # a wrong delivery would show up by now
    assert numbers(client.messages()) == [2, 3]


def test_writes_are_recorded_and_the_stream_gets_it_again_after_its_timeout(make_pipeline):
    pipeline = make_pipeline()
    client = user_stream(pipeline)
    (published,) = pipeline.publish(confirmable(1, ack_timeout=1))

    (first,) = client.wait_messages(1)
    assert first.id == published.event_id
    wait_until(lambda: acks_of(pipeline).records([published.message.id])[0]["written"] == "1",
               5)
    (record,) = acks_of(pipeline).records([published.message.id])
    assert int(record["due:7"]) - int(record["delivered:7"]) == 1000


def test_a_full_mailbox_sheds_low_priority_messages_and_says_so(make_pipeline):
    pipeline = make_pipeline()
    stream = user_stream(pipeline, queue_size=4, read=False)
    low = pipeline.publish(*[plain(n, priority="low") for n in range(3)])
    *_, last = pipeline.publish(*[plain(n) for n in range(3, 7)])
    wait_until(lambda: pipeline.hub.position.key >= last.position.key, 5,
               message="the reader to route them")

    client = StreamClient(stream)
    pipeline.clients.append(client)
    assert numbers(client.wait_messages(4)) == [3, 4, 5, 6]
    (lost,) = [frame.json() for frame in client.frames if frame.event == "history-lost"]
    assert lost["reason"] == "low_priority_shed" and lost["dropped"] == 3
    assert lost["dropped_event_ids"] == [low[0].event_id, low[-1].event_id]
    assert stream.subscription.closing is None
    assert pipeline.stats.shed_low == 3 and pipeline.stats.slow_consumers == 0
