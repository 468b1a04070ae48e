"""Stream requests refused for a reason that time will cure get a short 200 stream that
says why and when to come back (a browser's EventSource then returns by itself); those
that time will not cure stay JSON errors."""

from __future__ import annotations

import json

import pytest

from pushservice import create_app
from pushservice.auth import build_claims, mint_token
from pushservice.errors import StoreUnavailableError
from pushservice.settings import Settings

SECRET = "0123456789abcdef0123456789abcdef-refusals"


@pytest.fixture
def make_app(fake_clients):
    def make(**changes):
        return create_app(Settings(enable_auth=False, reader_block_ms=20).replace(**changes))

    return make


def refusal(response) -> dict:
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    text = response.get_data(as_text=True)
    lines = [line for line in text.split("\n") if line]
    retry = int(lines[0].removeprefix("retry: "))
    assert lines[1] == "event: closing"
    payload = json.loads(lines[2].removeprefix("data: "))
    assert payload["refused"] is True and payload["retry_ms"] == retry
    assert response.headers["Pushservice-Refused"] == payload["reason"]
    assert int(response.headers["Retry-After"]) >= 1
    assert "id:" not in text  # the client keeps its position
    return payload


def test_a_full_instance_answers_with_a_reconnectable_stream(make_app):
    app = make_app(max_connections=1)
    client = app.test_client()
    held = client.get("/sse/user/u1", buffered=False)
    assert held.status_code == 200

    payload = refusal(client.get("/sse/user/u1"))

    assert payload["reason"] == "too_many_connections"
    assert 2500 <= payload["retry_ms"] <= 7500  # around 5 s, spread
    held.close()


def test_redis_unavailable_for_a_resume_is_a_reconnectable_stream(make_app, monkeypatch):
    app = make_app()
    service = app.extensions["pushservice"]

    def down():
        raise StoreUnavailableError("Redis is unavailable: connection refused")

    monkeypatch.setattr(service.store, "stream_info", down)
    response = app.test_client().get("/sse/stream/news",
                                     headers={"Last-Event-ID": "e0ffe0ff-1000-0"})

    assert refusal(response)["reason"] == "redis_unavailable"
    assert service.streams.budget.total() == 0


def test_a_refused_crowd_is_told_to_come_back_at_different_times(make_app):
    app = make_app(max_connections=1)
    client = app.test_client()
    held = client.get("/sse/user/u1", buffered=False)

    delays = {refusal(client.get("/sse/user/u1"))["retry_ms"] for _ in range(20)}

    assert len(delays) > 15
    held.close()


def test_refusals_are_counted_by_reason(make_app):
    app = make_app(max_connections=1)
    client = app.test_client()
    held = client.get("/sse/user/u1", buffered=False)
    client.get("/sse/user/u1").get_data()
    held.close()

    metrics = app.extensions["pushservice"].metrics
    assert metrics.registry.get_sample_value(
        "message_push_stream_refusals_total", {"reason": "too_many_connections"}) == 1


def test_what_time_will_not_cure_stays_a_json_error(make_app):
    app = make_app(enable_auth=True, jwt_secret=SECRET)
    client = app.test_client()
    token = mint_token(build_claims("u1"), SECRET)

    missing = client.get("/sse/user/u1")
    forbidden = client.get(f"/sse/user/u2?token={token}")
    bad = client.get(f"/sse/user/u1?token={token}&named=maybe")

    assert (missing.status_code, missing.get_json()["error"]["code"]) == (401, "missing_token")
    assert (forbidden.status_code, forbidden.get_json()["error"]["code"]) == (
        403, "topic_forbidden")
    assert (bad.status_code, bad.get_json()["error"]["code"]) == (400, "invalid_parameter")
