"""The client's publishing against an in-process fake of the service (httpx.MockTransport):
error mapping, retries and backoff, Retry-After, deadlines, tokens, helpers."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from pushservice_client import (
    AsyncPushClient,
    AuthenticationError,
    BadRequestError,
    PermissionDeniedError,
    PushClient,
    RateLimitedError,
    TransportError,
    UnavailableError,
)
from pushservice_client.config import RetryPolicy
from pushservice_client.protocol import Backoff

from .conftest import error_response, message

SEND = "/api/v1/messages/send"
BATCH = "/api/v1/messages/batch"


def test_an_error_carries_the_services_code_message_details_status_and_retry_after(fake):
    fake.answer_next(error_response(403, "topic_forbidden", [{"topic": "user:9"}]))
    client = PushClient("http://push", transport=fake.transport, batching=False)
    with client, pytest.raises(PermissionDeniedError) as caught:
        client.send(message())
    error = caught.value
    assert (error.status, error.code, error.message) == (403, "topic_forbidden",
                                                         "topic_forbidden happened")
    assert error.details == [{"topic": "user:9"}]
    assert error.retry_after is None
    assert len(fake.requests) == 1, "a 403 is not retried"


def test_a_body_that_is_not_the_services_json_still_gives_a_readable_error(fake):
    fake.answer_next(httpx.Response(404, text="<html>nginx: not found</html>"))
    client = PushClient("http://push", transport=fake.transport, batching=False)
    with client, pytest.raises(Exception) as caught:
        client.send(message())
    assert caught.value.code == "http_404"
    assert "nginx" in caught.value.message


def test_every_message_gets_an_id_and_a_given_id_is_kept(fake):
    with PushClient("http://push", transport=fake.transport, batching=False) as client:
        generated = client.send(message())
        chosen = client.send({**message(), "id": "order-42-paid"})
    sent = fake.bodies(SEND)
    assert sent[0]["id"] == generated.id and generated.id.startswith("msg_")
    assert sent[1]["id"] == chosen.id == "order-42-paid"


def test_503_and_429_are_retried_with_the_same_id_honouring_retry_after(fake):
    fake.answer_next(
        error_response(503, "redis_unavailable", headers={"Retry-After": "0.2"}),
        error_response(429, "rate_limited", headers={"Retry-After": "0.1"}),
    )
    with PushClient("http://push", transport=fake.transport, batching=False) as client:
        started = time.monotonic()
        result = client.send(message())
        elapsed = time.monotonic() - started
    ids = {body["id"] for body in fake.bodies(SEND)}
    assert len(fake.requests) == 3 and ids == {result.id}, "retries resend the same id"
    assert elapsed >= 0.3, f"waited {elapsed:.3f}s, Retry-After asked for 0.3s in all"


def test_connection_errors_and_timeouts_are_retried(fake):
    fake.answer_next(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                     httpx.RemoteProtocolError("dropped"))
    with PushClient("http://push", transport=fake.transport, batching=False) as client:
        client.send(message())
    assert len(fake.requests) == 4


def test_a_400_is_not_retried(fake):
    client = PushClient("http://push", transport=fake.transport, batching=False)
    with client, pytest.raises(BadRequestError) as caught:
        client.send({**message(), "type": "nonsense"})
    assert caught.value.code == "validation_failed"
    assert len(fake.requests) == 1


def test_retries_stop_at_the_deadline_with_the_last_error(fake):
    def always_unavailable(request):
        return error_response(503, "redis_unavailable", headers={"Retry-After": "0.05"})

    fake.answer_next(*[always_unavailable] * 1000)
    with PushClient("http://push", transport=fake.transport, batching=False,
                    deadline=0.5) as client:
        started = time.monotonic()
        with pytest.raises(UnavailableError) as caught:
            client.send(message())
        elapsed = time.monotonic() - started
    assert caught.value.retry_after == 0.05
    assert elapsed < 0.6, f"gave up after {elapsed:.3f}s; the deadline is 0.5s"
    assert len(fake.requests) >= 3


def test_a_deadline_of_0_means_one_attempt(fake):
    fake.answer_next(error_response(429, "rate_limited", headers={"Retry-After": "1"}))
    with PushClient("http://push", transport=fake.transport, batching=False,
                    deadline=0) as client, pytest.raises(RateLimitedError) as caught:
        client.send(message())
    assert caught.value.retry_after == 1.0
    assert len(fake.requests) == 1


def test_an_unreachable_service_raises_a_transport_error_within_the_deadline():
    # Nothing listens on port 9 of loopback (discard is never enabled on these machines).
    with PushClient("http://127.0.0.1:9", batching=False, deadline=0.3) as client:
        started = time.monotonic()
        with pytest.raises(TransportError):
            client.send(message())
    assert time.monotonic() - started < 2


def test_backoff_is_full_jitter_exponential_and_capped():
    policy = RetryPolicy(deadline=1000, base_delay=0.1, max_delay=1.0)
    highest = Backoff(policy, rng=lambda: 1.0)
    lowest = Backoff(policy, rng=lambda: 0.0)
    failure = TransportError("down")
    assert [round(highest.delay(failure), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0,
                                                                   1.0]
    assert [lowest.delay(failure) for _ in range(3)] == [0.0, 0.0, 0.0]
    limited = RateLimitedError(429, "rate_limited", "slow down", None, retry_after=2.0)
    assert Backoff(policy, rng=lambda: 0.5).delay(limited) == 2.05


def test_the_token_comes_from_the_environment(fake, monkeypatch):
    monkeypatch.setenv("PUSHSERVICE_TOKEN", "from-env")
    monkeypatch.setenv("PUSHSERVICE_URL", "http://push.example:1234/")
    with PushClient(transport=fake.transport, batching=False) as client:
        client.send(message())
        assert client.base_url == "http://push.example:1234"
    assert fake.requests[0].headers["Authorization"] == "Bearer from-env"
    assert str(fake.requests[0].url).startswith("http://push.example:1234/api/v1/")


def test_a_token_callable_is_asked_again_after_a_401(fake):
    tokens = iter(["expired", "fresh", "fresh"])
    fake.answer_next(error_response(401, "token_expired"))
    with PushClient("http://push", token=lambda: next(tokens), transport=fake.transport,
                    batching=False) as client:
        client.send(message())
    assert [r.headers["Authorization"] for r in fake.requests] == ["Bearer expired",
                                                                   "Bearer fresh"]


def test_a_static_token_that_is_refused_raises_at_once(fake):
    fake.answer_next(error_response(401, "invalid_token"))
    with PushClient("http://push", token="bad", transport=fake.transport,
                    batching=False) as client, pytest.raises(AuthenticationError):
        client.send(message())
    assert len(fake.requests) == 1


def test_helpers_build_the_envelope_for_each_type(fake):
    with PushClient("http://push", service="knowledge-service", transport=fake.transport,
                    batching=False) as client:
        client.progress({"task_id": "t1"}, 65, "处理进度: 65%", stage="embedding")
        client.status({"task_id": "t1"}, "running")
        client.error({"task_id": "t1"}, "failed", code="E42")
        client.success({"task_id": "t1"}, result={"chunks": 20})
        client.warning({"user_id": "u1"}, "disk almost full")
        client.info({"channel": "news"}, "hello", metadata={"priority": "low"})
        client.custom({"kb_id": "kb1"}, {"anything": [1, 2]}, source="indexer")
    bodies = fake.bodies(SEND)
    assert [b["type"] for b in bodies] == ["progress", "status", "error", "success", "warning",
                                           "info", "custom"]
    assert {b["service"] for b in bodies} == {"knowledge-service"}
    assert bodies[0]["data"] == {"progress": 65, "stage": "embedding",
                                 "message": "处理进度: 65%"}
    assert bodies[0]["target"] == {"task_id": "t1"}
    assert bodies[1]["data"] == {"status": "running"}
    assert bodies[2]["data"] == {"code": "E42", "message": "failed"}
    assert bodies[3]["data"] == {"result": {"chunks": 20}}
    assert bodies[5]["metadata"] == {"priority": "low"}
    assert bodies[6]["data"] == {"anything": [1, 2]} and bodies[6]["source"] == "indexer"
    # Text travels as UTF-8, not escaped.
    assert "处理进度".encode() in fake.requests[0].content


def test_broadcast_and_batch_use_their_endpoints(fake):
    with PushClient("http://push", transport=fake.transport, max_batch_size=3) as client:
        broadcast = client.broadcast(message())
        results = client.batch([message(n) for n in range(7)])
    paths = [r.url.path for r in fake.requests]
    assert paths == ["/api/v1/messages/broadcast", BATCH, BATCH, BATCH]
    assert [len(b["messages"]) for b in fake.bodies(BATCH)] == [3, 3, 1]
    assert len(results) == 7 and len({r.event_id for r in results}) == 7
    assert broadcast.event_id


def test_batch_is_all_or_nothing_like_the_service(fake):
    client = PushClient("http://push", transport=fake.transport)
    with client, pytest.raises(BadRequestError) as caught:
        client.batch([message(0), {**message(1), "type": "bad"}])
    assert caught.value.details[0]["index"] == 1


def test_send_many_reports_each_messages_own_outcome_in_order(fake):
    messages = [message(0), {**message(1), "type": "bad"}, message(2)]
    with PushClient("http://push", transport=fake.transport) as client:
        outcomes = client.send_many(messages)
    assert outcomes[0].event_id and outcomes[2].event_id
    assert isinstance(outcomes[1], BadRequestError)
    assert outcomes[1].details == [{"field": "type", "error": "bad type"}]


def test_operations_calls(fake):
    with PushClient("http://push", transport=fake.transport) as client:
        client.stats()
        client.connections(user="u1", limit=5, cursor="abc")
        client.kick("c_123")
    assert [(r.method, r.url.path) for r in fake.requests] == [
        ("GET", "/api/v1/connections/stats"), ("GET", "/api/v1/connections"),
        ("DELETE", "/api/v1/connections/c_123")]
    assert dict(fake.requests[1].url.params) == {"user": "u1", "limit": "5", "cursor": "abc"}


def test_the_async_client_has_the_same_api_and_retries(fake):
    fake.answer_next(error_response(503, "not_ready", headers={"Retry-After": "0.05"}))

    async def run():
        async with AsyncPushClient("http://push", service="svc",
                                   transport=fake.transport) as client:
            first = await client.progress({"task_id": "t1"}, 10)
            many = await asyncio.gather(*[client.info({"channel": "c"}, f"m{n}")
                                          for n in range(20)])
            broadcast = await client.broadcast(message())
            batch = await client.batch([message(1), message(2)])
            stats = await client.stats()
            return first, many, broadcast, batch, stats

    first, many, _broadcast, batch, stats = asyncio.run(run())
    assert first.event_id and len(many) == 20 and len(batch) == 2
    assert len({result.id for result in many}) == 20
    assert stats["path"] == "/api/v1/connections/stats"
    assert json.loads(fake.requests[0].content)["id"] == first.id
