"""The publish API through Flask's test client, with the store on fakeredis: what a
publishing service is answered, and what reaches the stream."""

from __future__ import annotations

import json
import socket

import pytest

from pushservice import create_app
from pushservice.settings import Settings
from tests.support.examples import SPEC_EXAMPLE

SEND = "/api/v1/messages/send"
BROADCAST = "/api/v1/messages/broadcast"
BATCH = "/api/v1/messages/batch"



def message(n: int = 0, **changes) -> dict:
    return {"type": "info", "service": "svc", "target": {"user_id": "u1"}, "data": {"n": n},
            **changes}


@pytest.fixture
def api_settings() -> Settings:
    return Settings(max_request_bytes=8192, max_message_bytes=4096, max_batch_size=3,
                    enable_auth=False)


@pytest.fixture
def app(fake_clients, api_settings):
    app = create_app(api_settings)
    yield app
    app.extensions["pushservice"].store.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def stream(app, fake_redis):
    """What the stream holds: (entry id, fields) pairs, oldest first."""
    key = app.extensions["pushservice"].store.stream_key
    return lambda: fake_redis.xrange(key)


def post_json(client, url: str, payload) -> object:
    return client.post(url, data=json.dumps(payload, ensure_ascii=False).encode(),
                       content_type="application/json")


def assert_error(response, status: int, code: str) -> dict:
    """Every error has one shape: {"error": {"code", "message", "details"}}."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# -- accepted ---------------------------------------------------------------------------


def test_send_is_accepted_with_where_it_went(client, stream, app):
    response = post_json(client, SEND, message(1, target={"user_id": "u1", "session_id": "s1"}))

    assert response.status_code == 202
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"id", "event_id", "topics", "duplicate"}
    assert body["id"].startswith("msg_")
    assert body["topics"] == ["user:u1", "session:s1", "service:svc"]
    assert body["duplicate"] is False
    ((entry_id, fields),) = stream()
    epoch = app.extensions["pushservice"].store.current_epoch()
    assert body["event_id"] == f"{epoch}-{entry_id.decode()}"
    assert json.loads(fields[b"m"])["id"] == body["id"]


def test_specification_example_is_stored_byte_for_byte(client, stream):
    raw = json.dumps(SPEC_EXAMPLE, ensure_ascii=False, separators=(",", ":")).encode()

    response = client.post(SEND, data=raw, content_type="application/json")

    assert response.status_code == 202
    assert response.get_json()["id"] == "msg_1753859400_001"
    ((_, fields),) = stream()
    assert fields[b"m"] == raw
    assert "正在生成向量嵌入...".encode() in fields[b"m"]


def test_charset_in_the_content_type_is_fine(client):
    response = client.post(SEND, data=json.dumps(message()),
                           content_type="application/json; charset=utf-8")

    assert response.status_code == 202


def test_repeated_client_id_is_accepted_as_a_duplicate_and_stored_once(client, stream):
    first = post_json(client, SEND, message(1, id="order-42")).get_json()
    again = post_json(client, SEND, message(1, id="order-42")).get_json()

    assert first["duplicate"] is False
    assert again["duplicate"] is True
    assert again["event_id"] == first["event_id"]
    assert len(stream()) == 1


def test_broadcast_is_accepted_on_the_broadcast_topic(client, stream):
    response = post_json(client, BROADCAST, {"type": "warning", "service": "ops",
                                             "data": {"text": "maintenance at 22:00"}})

    assert response.status_code == 202
    assert response.get_json()["topics"] == ["*"]
    ((_, fields),) = stream()
    assert fields[b"h"].decode().split(" ")[3] == "*"
    assert fields[b"h"].decode().split(" ")[1] == "warning"


def test_batch_is_accepted_in_order(client, stream):
    response = post_json(client, BATCH, {"messages": [message(n) for n in range(3)]})

    assert response.status_code == 202
    body = response.get_json()
    assert body["accepted"] == 3
    assert [set(r) for r in body["results"]] == [{"id", "event_id", "topics", "duplicate"}] * 3
    stored = stream()
    assert [json.loads(fields[b"m"])["data"]["n"] for _, fields in stored] == [0, 1, 2]
    assert [r["event_id"].split("-", 1)[1] for r in body["results"]] == [
        entry_id.decode() for entry_id, _ in stored]


def test_batch_as_a_bare_array_is_accepted(client, stream):
    response = post_json(client, BATCH, [message(1), message(2)])

    assert response.status_code == 202
    assert response.get_json()["accepted"] == 2
    assert len(stream()) == 2


# -- refused before reading the body ----------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx"])
@pytest.mark.parametrize("url", [SEND, BROADCAST, BATCH])
def test_wrong_content_type_is_415(client, stream, url, content_type):
    response = client.post(url, data=json.dumps(message()), content_type=content_type)

    error = assert_error(response, 415, "unsupported_media_type")
    assert "application/json" in error["message"]
    assert stream() == []


# -- malformed bodies -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{", b'{"type": "info",}', b"not json", b"{'a': 1}",
                                 b'{"type": "info"} trailing', b"NaN"])
def test_malformed_json_is_400(client, raw):
    error = assert_error(client.post(SEND, data=raw, content_type="application/json"),
                         400, "invalid_json")

    assert "JSON" in error["message"]


def test_invalid_utf8_is_400(client, stream):
    raw = b'{"type": "info", "service": "svc", "target": {"user_id": "u1"}, "data": {"t": "\xff\xfe"}}'

    assert_error(client.post(SEND, data=raw, content_type="application/json"),
                 400, "invalid_json")
    assert stream() == []


@pytest.mark.parametrize("number, accepted", [
    (b"9223372036854775807", True),  # 19 digits, still 64 bits: read exactly
    (b"-9223372036854775808", True),
    (b"18446744073709551616", False),  # beyond 64 bits: refused, not rounded
    (b"1234567890123456789012", False),
    (b"1.2345678901234567890123", True),  # a float stays a float
])
def test_long_numbers_are_read_exactly_or_refused(client, stream, number, accepted):
    raw = (b'{"type":"info","service":"svc","target":{"user_id":"u1"},"data":{"n":'
           + number + b',"s":"1234567890123456789012345"}}')

    response = client.post(SEND, data=raw, content_type="application/json")

    assert response.status_code == (202 if accepted else 400), response.get_json()
    if accepted:
        ((_, fields),) = stream()
        assert json.loads(fields[b"m"])["data"]["n"] == json.loads(number)
    else:
        assert stream() == []


@pytest.mark.parametrize("url", [SEND, BROADCAST, BATCH])
def test_empty_body_is_400(client, url):
    error = assert_error(client.post(url, data=b"", content_type="application/json"),
                         400, "invalid_json")

    assert "empty" in error["message"]


@pytest.mark.parametrize("payload", [[], "text", 1, None])
def test_a_message_that_is_not_an_object_is_400(client, payload):
    error = assert_error(post_json(client, SEND, payload), 400, "validation_failed")

    assert error["details"] == [{"field": "", "error": "a message must be a JSON object"}]


def test_invalid_message_is_400_with_every_problem(client, stream):
    response = post_json(client, SEND, {"type": "notice", "service": "svc",
                                        "target": {"user_id": True}, "extra": 1})

    error = assert_error(response, 400, "validation_failed")
    assert {d["field"] for d in error["details"]} == {"type", "target.user_id", "extra"}
    assert stream() == []


def test_send_without_routing_key_is_400(client):
    error = assert_error(post_json(client, SEND, message(target={})), 400,
                         "validation_failed")

    assert error["details"][0]["field"] == "target"


# -- limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [SEND, BATCH])
def test_body_over_max_request_bytes_is_413(client, stream, url, api_settings):
    raw = json.dumps(message(data={"text": "x" * api_settings.max_request_bytes})).encode()

    assert_error(client.post(url, data=raw, content_type="application/json"),
                 413, "payload_too_large")
    assert stream() == []


def test_message_over_max_message_bytes_is_413(client, stream, api_settings):
    response = post_json(client, SEND, message(data={"text": "x" * 5000}))

    error = assert_error(response, 413, "message_too_large")
    assert error["details"]["limit"] == api_settings.max_message_bytes
    assert stream() == []


def test_batch_over_max_batch_size_is_413(client, stream):
    response = post_json(client, BATCH, {"messages": [message(n) for n in range(4)]})

    error = assert_error(response, 413, "batch_too_large")
    assert error["details"] == {"count": 4, "limit": 3}
    assert stream() == []


def test_batch_with_one_oversize_message_is_413_and_names_it(client, stream):
    response = post_json(client, BATCH, {"messages": [
        message(0), message(1, data={"text": "x" * 5000})]})

    error = assert_error(response, 413, "message_too_large")
    assert error["details"]["index"] == 1
    assert stream() == []


# -- batches are all or nothing ----------------------------------------------------------


def test_batch_with_one_bad_item_is_400_per_item_and_writes_nothing(client, stream):
    response = post_json(client, BATCH, {"messages": [
        message(0), message(1, type="notice"), message(2),
        {"service": "svc", "target": {"user_id": True}, "type": "info"}]})

    # A batch over MAX_BATCH_SIZE (3) is refused first; keep this one within it.
    assert response.status_code == 413
    response = post_json(client, BATCH, {"messages": [
        message(0), message(1, type="notice"),
        {"service": "svc", "target": {"user_id": True}, "type": "info"}]})

    error = assert_error(response, 400, "validation_failed")
    assert error["details"] == [
        {"index": 1, "errors": [{"field": "type", "error": "must be one of progress, status, "
                                 "error, success, warning, info, custom"}]},
        {"index": 2, "errors": [{"field": "target.user_id",
                                 "error": "must be a string or an integer"}]},
    ]
    assert "nothing was published" in error["message"]
    assert stream() == []


@pytest.mark.parametrize("payload, field", [
    ({"messages": []}, "messages"),
    ([], "messages"),
    ({"messages": "hello"}, "messages"),
    ({}, "messages"),
    ({"messages": [{}], "priority": "high"}, "priority"),
    ("text", "messages"),
])
def test_malformed_batch_is_400(client, payload, field):
    error = assert_error(post_json(client, BATCH, payload), 400, "validation_failed")

    assert error["details"][0]["field"] == field


# -- Redis unavailable ------------------------------------------------------------------


@pytest.fixture
def closed_port():
    """A loopback port that refuses connections (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("url, payload", [(SEND, message()), (BROADCAST, message()),
                                          (BATCH, [message(1), message(2)])])
def test_unreachable_redis_is_503_with_retry_after(closed_port, url, payload):
    app = create_app(Settings(redis_url=f"redis://127.0.0.1:{closed_port}/0",
                              enable_auth=False))

    response = post_json(app.test_client(), url, payload)

    error = assert_error(response, 503, "redis_unavailable")
    assert response.headers["Retry-After"] == "2"
    assert "Redis" in error["message"]


def test_publish_while_redis_is_down_writes_nothing(client, stream, fake_redis_server):
    assert post_json(client, SEND, message(1)).status_code == 202
    fake_redis_server.connected = False

    response = post_json(client, BATCH, [message(2), message(3)])

    assert_error(response, 503, "redis_unavailable")
    assert response.headers["Retry-After"] == "2"
    fake_redis_server.connected = True
    assert len(stream()) == 1


# -- other routes -----------------------------------------------------------------------


def test_unknown_route_is_404_json(client):
    error = assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")

    assert error["details"] is None


@pytest.mark.parametrize("url", [SEND, BROADCAST, BATCH])
def test_wrong_method_is_405_json_with_allow(client, url):
    response = client.get(url)

    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]
