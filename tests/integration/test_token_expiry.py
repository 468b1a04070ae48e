"""A stream ends when its token expires, idle or busy, and resumes without loss."""

from __future__ import annotations

import time

import gevent
import pytest

from pushservice.engine.subscription import Heartbeat
from tests.support.pipeline import StreamClient, message

# Resumes after expiry touch stream semantics: run on Redis 6.2 and 7.x.
pytestmark = pytest.mark.redis_versions


def _session(pipeline, expires_at: float, last_event_id: str | None = None) -> StreamClient:
    return pipeline.subscribe("user:1", last_event_id=last_event_id, expires_at=expires_at)


def _closing(reader: StreamClient):
    return [frame for frame in reader.frames if frame.event == "closing"]


def test_an_idle_stream_closes_at_expiry_with_token_expired(make_pipeline):
    pipeline = make_pipeline()
    expires_at = time.time() + 0.5
    reader = _session(pipeline, expires_at=expires_at)
    # Bounded by the wait, not by a tight threshold a loaded machine could break.
    reader.wait(lambda r: r.ended, timeout=10)
    assert time.time() >= expires_at, "the stream ended before its token expired"
    (closing,) = _closing(reader)
    payload = closing.json()
    assert payload["reason"] == "token_expired" and "fresh token" in payload["message"]
    assert closing.retry == payload["retry_ms"]


def test_a_stream_whose_queue_never_runs_dry_still_closes_at_expiry(make_pipeline):
    pipeline = make_pipeline()
    stream = pipeline.streams.open(("user:1",), queue_size=100_000,
                                   expires_at=time.time() + 0.3)
    subscription = stream.subscription

    def flood() -> None:
        while True:
            for _ in range(10):
                subscription.offer(Heartbeat(pipeline.hub.position))
            gevent.sleep(0)

    flooder = gevent.spawn(flood)
    chunks: list[bytes] = []

    def consume() -> None:
        # Like a socket write, each chunk yields to other greenlets, which refill the
        # queue before the stream looks at it again.
        for chunk in stream:
            chunks.append(chunk)
            gevent.sleep(0.001)

    consumer = gevent.spawn(consume)
    try:
        consumer.join(timeout=5)
        assert consumer.dead, "the stream outlived its token"
    finally:
        flooder.kill()
        consumer.kill()
        stream.close()
    assert b'event: closing\ndata: {"reason":"token_expired"' in b"".join(chunks)


def test_a_busy_stream_closes_at_expiry_too_and_resumes_without_loss(make_pipeline):
    pipeline = make_pipeline()
    reader = _session(pipeline, expires_at=time.time() + 0.6)
    reader.wait(lambda r: any(f.event == "connected" for f in r.frames))
    published = 0

    def publish_steadily() -> None:
        # Stops between publishes: killed inside one, it would write a message whose
        # number it never counted, and the next would repeat that number.
        nonlocal published
        while not reader.ended:
            pipeline.publish(message(published))
            published += 1
            gevent.sleep(0.005)

    publisher = gevent.spawn(publish_steadily)
    try:
        reader.wait(lambda r: r.ended, timeout=10)
    finally:
        publisher.join(timeout=10)
        publisher.kill()
    assert _closing(reader)[0].json()["reason"] == "token_expired"
    got = [frame.json()["data"]["n"] for frame in reader.messages()]
    assert got == list(range(len(got))) and len(got) > 0
    for _ in range(5):  # while the client fetches a fresh token
        pipeline.publish(message(published))
        published += 1
    # A fresh token and Last-Event-ID: everything after the last frame, once, in order.
    again = _session(pipeline, expires_at=time.time() + 30,
                     last_event_id=reader.parser.last_event_id)
    rest = again.wait_messages(published - len(got))
    assert [frame.json()["data"]["n"] for frame in rest] == list(range(len(got), published))
