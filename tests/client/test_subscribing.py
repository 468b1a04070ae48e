"""SSE parsing and the subscription's reconnects, against scripted streams
(httpx.MockTransport): Last-Event-ID, retry:, closing, refusals, history-lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

import httpx
import pytest
from pushservice_client import (
    AsyncPushClient,
    AuthenticationError,
    BadRequestError,
    HistoryLostError,
    PermissionDeniedError,
    PushClient,
    UnavailableError,
)
from pushservice_client.sse import SSEParser

from .conftest import error_response

STREAM_HEADERS = {"content-type": "text/event-stream; charset=utf-8"}


def frame(event: str | None, data: object, id: str | None = None) -> bytes:
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + (data if isinstance(data, str) else json.dumps(data)))
    return ("\n".join(lines) + "\n\n").encode()


def connected(id: str = "ep-0-0") -> bytes:
    return frame("connected", {"connection_id": "c1", "heartbeat_interval": 30}, id)


def progress(n: int, id: str) -> bytes:
    return frame("progress", {"id": f"m{n}", "type": "progress", "data": {"n": n}}, id)


def stream(*parts: bytes, retry_ms: int | None = 10) -> httpx.Response:
    head = f"retry: {retry_ms}\n\n".encode() if retry_ms is not None else b""
    return httpx.Response(200, headers=STREAM_HEADERS, content=head + b"".join(parts))


class Streams:
    """Answers each stream request with the next scripted response, recording them."""

    def __init__(self, *answers) -> None:
        self.answers = deque(answers)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        if not self.answers:
            return httpx.Response(200, headers=STREAM_HEADERS, content=b": idle\n\n")
        answer = self.answers.popleft()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def header(self, index: int, name: str) -> str | None:
        return self.requests[index].headers.get(name)


def _client(streams: Streams, **options) -> PushClient:
    return PushClient("http://push", transport=httpx.MockTransport(streams.handle), **options)


def _take(subscription, count: int) -> list:
    events = []
    for event in subscription:
        events.append(event)
        if len(events) == count:
            break
    return events


# -- parsing ------------------------------------------------------------------------------


def test_the_parser_follows_the_html_standard_whatever_the_chunking():
    text = ("\ufeffretry: 1500\r\n: a comment\r\n\r\n"
            "id: ep-1-0\revent: progress\rdata: {\"a\":\r\ndata: 1}\r\r"
            "id: ep-1-1\nevent: status\ndata\n\n"
            "id: bad\0id\nretry: soon\ndata: x\u2028y\n\n"
            "id: ep-2-0\n\n"
            "data: never finished")
    data = text.encode()
    for size in (1, 2, 3, 7, len(data)):
        parser = SSEParser()
        events = []
        for start in range(0, len(data), size):
            events += parser.feed(data[start:start + size])
        assert [(e.type, e.data, e.id) for e in events] == [
            ("progress", '{"a":\n1}', "ep-1-0"),
            ("status", "", "ep-1-1"),
            ("message", "x\u2028y", "ep-1-1"),  # an id with NUL is ignored
        ], f"chunks of {size}"
        assert parser.retry_ms == 1500  # "soon" is not a number: ignored
        assert parser.comments == 1
        assert parser.last_event_id == "ep-2-0"  # a block with only an id still counts


# -- subscribing --------------------------------------------------------------------------


def test_messages_are_yielded_with_their_type_id_and_json():
    streams = Streams(stream(connected(), progress(1, "ep-1-0"),
                             frame(None, {"type": "info", "data": {}}, "ep-1-1")))
    with _client(streams) as client, client.subscribe(user="123") as subscription:
        first, second = _take(subscription, 2)
    assert (first.type, first.id, first.data["data"]) == ("progress", "ep-1-0", {"n": 1})
    assert (second.type, second.id) == ("info", "ep-1-1"), "unnamed: the message's own type"
    request = streams.requests[0]
    assert request.url.path == "/sse/user/123"
    assert request.headers["accept"] == "text/event-stream"
    assert "last-event-id" not in request.headers


def test_it_reconnects_with_last_event_id_after_the_retry_hint():
    streams = Streams(stream(connected(), progress(1, "ep-1-0"), retry_ms=150),
                      stream(connected("ep-1-0"), progress(2, "ep-2-0")))
    with _client(streams) as client, \
            client.subscribe(channels=["a", "b"], session_id="s1", named=False,
                             heartbeat_events=True) as subscription:
        events = _take(subscription, 2)
    assert [e.data["data"]["n"] for e in events] == [1, 2]
    assert streams.header(1, "last-event-id") == "ep-1-0"
    assert streams.times[1] - streams.times[0] >= 0.15
    request = streams.requests[0]
    assert request.url.path == "/sse/stream/a,b"
    assert dict(request.url.params) == {"session_id": "s1", "named": "0",
                                        "heartbeat_events": "1"}


def test_a_resume_point_without_data_is_remembered():
    streams = Streams(stream(connected("ep-5-0"), b"id: ep-6-0\n: heartbeat\n\n"),
                      stream(connected(), progress(1, "ep-7-0")))
    with _client(streams) as client, client.subscribe(user="u") as subscription:
        _take(subscription, 1)
    assert streams.header(1, "last-event-id") == "ep-6-0"


def test_closing_is_followed_and_token_expired_asks_for_a_fresh_token():
    tokens = iter(["t1", "t2", "t3"])
    closing = frame("closing", {"reason": "token_expired", "retry_ms": 120}, None)
    streams = Streams(stream(connected(), progress(1, "ep-1-0"), closing, retry_ms=5000),
                      stream(connected(), progress(2, "ep-2-0")))
    with _client(streams, token=lambda: next(tokens)) as client, \
            client.subscribe(user="u", control=True) as subscription:
        events = _take(subscription, 5)
    assert [e.type for e in events] == ["connected", "progress", "closing", "connected",
                                        "progress"]
    assert [streams.header(i, "authorization") for i in (0, 1)] == ["Bearer t1", "Bearer t2"]
    waited = streams.times[1] - streams.times[0]
    assert 0.12 <= waited < 2, f"closing said 120 ms, retry: said 5 s; waited {waited:.3f}s"


def test_a_refusal_stream_is_waited_out_and_then_resumed():
    refusal = httpx.Response(
        200, headers={**STREAM_HEADERS, "Retry-After": "1", "Pushservice-Refused": "shutdown"},
        content=b"retry: 100\n\n" + frame("closing", {"reason": "shutdown", "retry_ms": 100,
                                                       "message": "draining",
                                                       "refused": True}))
    streams = Streams(refusal, stream(connected(), progress(1, "ep-1-0")))
    with _client(streams) as client, client.subscribe(user="u", last_event_id="ep-0-9") \
            as subscription:
        (event,) = _take(subscription, 1)
    assert event.data["data"] == {"n": 1}, "the refusal's closing frame is not a message"
    waited = streams.times[1] - streams.times[0]
    assert 0.1 <= waited <= 0.2, f"retry_ms 100 plus at most 20% jitter; waited {waited:.3f}s"
    assert streams.header(1, "last-event-id") == "ep-0-9"


@pytest.mark.parametrize("status,code", [(503, "too_many_connections"),
                                         (429, "too_many_user_connections")])
def test_a_503_or_429_on_a_stream_is_retried_after_retry_after(status, code):
    streams = Streams(error_response(status, code, headers={"Retry-After": "0.1"}),
                      stream(connected(), progress(1, "ep-1-0")))
    with _client(streams) as client, client.subscribe(user="u") as subscription:
        _take(subscription, 1)
    waited = streams.times[1] - streams.times[0]
    assert 0.1 <= waited <= 0.2, f"waited {waited:.3f}s"


@pytest.mark.parametrize("status,code,error", [
    (400, "invalid_user_id", BadRequestError),
    (401, "invalid_token", AuthenticationError),
    (403, "topic_forbidden", PermissionDeniedError),
])
def test_refusals_that_time_does_not_cure_are_raised(status, code, error):
    streams = Streams(error_response(status, code))
    with _client(streams, token="t") as client, client.subscribe(user="u") as subscription, \
            pytest.raises(error) as caught:
        next(subscription)
    assert caught.value.code == code
    assert len(streams.requests) == 1


def test_dropped_connections_are_retried_with_growing_delays_up_to_max_attempts():
    streams = Streams(*[httpx.ConnectError("refused")] * 10)
    started = time.monotonic()
    with _client(streams) as client, client.subscribe(user="u", max_attempts=4) \
            as subscription:
        subscription.state.retry_ms = 40
        with pytest.raises(Exception, match="refused"):
            next(subscription)
    assert len(streams.requests) == 4
    gaps = [b - a for a, b in zip(streams.times, streams.times[1:], strict=False)]
    # Each wait is between half and all of 40, 80, 160 ms.
    for gap, ceiling in zip(gaps, (0.04, 0.08, 0.16), strict=True):
        assert ceiling / 2 <= gap <= ceiling + 0.1, gaps
    assert time.monotonic() - started < 3


def test_a_proxy_page_instead_of_a_stream_is_retried():
    streams = Streams(httpx.Response(502, text="<html>bad gateway</html>"),
                      httpx.Response(200, text="<html>maintenance</html>"),
                      stream(connected(), progress(1, "ep-1-0")))
    with _client(streams) as client, client.subscribe(user="u") as subscription:
        subscription.state.retry_ms = 20
        _take(subscription, 1)
    assert len(streams.requests) == 3


def test_history_lost_is_raised_by_default_and_the_subscription_goes_on():
    lost = frame("history-lost", {"reason": "history_trimmed", "last_event_id": "ep-0-1",
                                  "resumes_from": "ep-3-0"}, None)
    streams = Streams(stream(connected(), lost, progress(3, "ep-3-0")))
    with _client(streams) as client, client.subscribe(user="u", last_event_id="ep-0-1") \
            as subscription:
        with pytest.raises(HistoryLostError) as caught:
            next(subscription)
        after = next(subscription)
    assert (caught.value.reason, caught.value.last_event_id, caught.value.resumes_from) == (
        "history_trimmed", "ep-0-1", "ep-3-0")
    assert after.data["data"] == {"n": 3}


def test_history_lost_can_be_yielded_as_an_event_instead():
    lost = frame("history-lost", {"reason": "stream_reset", "last_event_id": "old-1-0",
                                  "resumes_from": "ep-1-0"}, None)
    streams = Streams(stream(connected(), lost, progress(1, "ep-1-0")))
    with _client(streams) as client, client.subscribe(user="u", history_lost="event") \
            as subscription:
        events = _take(subscription, 2)
    assert [e.type for e in events] == ["history-lost", "progress"]
    assert events[0].data["reason"] == "stream_reset"


def test_the_async_subscription_resumes_too():
    closing = frame("closing", {"reason": "shutdown", "retry_ms": 30}, None)
    streams = Streams(error_response(503, "not_ready", headers={"Retry-After": "0.05"}),
                      stream(connected(), progress(1, "ep-1-0"), closing),
                      stream(connected(), progress(2, "ep-2-0")))

    async def run():
        async with AsyncPushClient("http://push",
                                   transport=httpx.MockTransport(streams.handle)) as client:
            events = []
            async with client.subscribe(service="knowledge-service") as subscription:
                async for event in subscription:
                    events.append(event)
                    if len(events) == 2:
                        break
            return events

    events = asyncio.run(run())
    assert [e.data["data"]["n"] for e in events] == [1, 2]
    assert streams.requests[0].url.path == "/sse/service/knowledge-service"
    assert streams.header(2, "last-event-id") == "ep-1-0"


def test_giving_up_on_a_refusal_stream_raises_what_the_service_said():
    refusal = httpx.Response(
        200, headers={**STREAM_HEADERS, "Pushservice-Refused": "too_many_connections"},
        content=frame("closing", {"reason": "too_many_connections", "retry_ms": 10,
                                  "message": "full", "refused": True}))
    streams = Streams(refusal)
    with _client(streams) as client, client.subscribe(user="u", max_attempts=1) \
            as subscription, pytest.raises(UnavailableError) as caught:
        next(subscription)
    assert caught.value.code == "too_many_connections"
