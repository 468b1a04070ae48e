"""Hostile and malformed requests against the real service (gunicorn, two gevent workers,
real Redis, authentication on).

Every case asserts the status, the error code in the JSON error shape, that nothing was
written to the message stream, and that no connection was left open. The terminal
summary prints how many cases ran.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pushservice.auth import build_claims, mint_token
from pushservice.store import Keys
from tests.support.sse_client import SSEClient
from tests.support.streams import published_count
from tests.support.waiting import wait_until

SECRET = "e2e-hostile-0123456789abcdef0123456789abcdef"
ISSUER = "https://login.example"
AUDIENCE = "pushservice"
MAX_REQUEST_BYTES = 65536
MAX_MESSAGE_BYTES = 16384
MAX_BATCH_SIZE = 20
MAX_CHANNELS = 10

CONTROL_EVENTS = {"connected", "history-lost", "closing", "heartbeat"}


# -- tokens -----------------------------------------------------------------------------------


def _b64(data: bytes | dict) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(subject: str = "123", **grants: Any) -> dict:
    grants.setdefault("issuer", ISSUER)
    grants.setdefault("audience", AUDIENCE)
    return build_claims(subject, **grants)


def _hs256(claims: dict, key: str | bytes = SECRET) -> str:
    return mint_token(claims, key, "HS256")


def _unsigned(claims: dict, alg: str = "none") -> str:
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(claims)}."


def _hmac_with(key: bytes, claims: dict) -> str:
    """An HS256 token keyed with ``key`` by hand (PyJWT refuses PEM keys for HMAC)."""
    head = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(key, head.encode(), hashlib.sha256).digest()
    return f"{head}.{_b64(mac)}"


@dataclass(frozen=True)
class Keys2:
    private: bytes
    public: str


def _token_factories(keys: Keys2) -> dict[str, Callable[[], str]]:
    def tampered() -> str:
        header, _, rest = _hs256(_claims("123")).partition(".")
        signature = rest.split(".")[1]
        return f"{header}.{_b64(_claims('456'))}.{signature}"

    def claims_with(**changes: Any) -> dict:
        claims = _claims("123")
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    return {
        "subscriber": lambda: _hs256(_claims("123", subscribe=["kb:kb789", "task:*"])),
        "publisher": lambda: _hs256(_claims("knowledge-service", service="knowledge-service",
                                            publish=["user:*", "kb:*", "session:*"])),
        "rs256_publisher": lambda: mint_token(
            _claims("agent-service", service="agent-service", publish=["user:*"]),
            keys.private, "RS256"),
        "expired": lambda: _hs256(_claims("123", ttl_seconds=-3600)),
        "not_yet_valid": lambda: _hs256(_claims("123", not_before_seconds=3600)),
        "issued_in_future": lambda: _hs256(claims_with(iat=2**31)),
        "wrong_audience": lambda: _hs256(_claims("123", audience="billing")),
        "no_audience": lambda: _hs256(claims_with(aud=None)),
        "wrong_issuer": lambda: _hs256(_claims("123", issuer="https://evil.example")),
        "forged": lambda: _hs256(_claims("123"), "forged-0123456789abcdef0123456789abcdef"),
        "tampered": tampered,
        "alg_none": lambda: _unsigned(_claims("123")),
        "alg_none_upper": lambda: _unsigned(_claims("123"), "NONE"),
        "alg_confusion": lambda: _hmac_with(keys.public.encode(), _claims("123")),
        "alg_hs512": lambda: mint_token(_claims("123"), SECRET * 2, "HS512"),
        "no_exp": lambda: _hs256(claims_with(exp=None)),
        "no_sub": lambda: _hs256(claims_with(sub=None)),
        "sub_with_newline": lambda: _hs256(claims_with(sub="123\nadmin")),
        "bad_claims": lambda: _hs256(claims_with(push={"subscribe": "*"})),
        "garbage": lambda: "not-a-token",
        "huge": lambda: "eyJ" + "A" * 7000,
    }


# -- cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request and the answer it must get.

    ``auth`` names a token sent as ``Authorization: Bearer``; ``query_token`` one appended
    as ``token=``; ``cookie`` one sent as the auth cookie. ``event`` is a control event a
    stream answer (status 200) must carry.
    """

    name: str
    method: str
    path: str
    status: int
    code: str | None
    auth: str | None = None
    query_token: str | None = None
    cookie: str | None = None
    body: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    event: str | None = None


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _message(**changes: Any) -> dict:
    message = {"type": "progress", "service": "knowledge-service",
               "target": {"user_id": "123"}, "data": {"progress": 10}}
    message.update(changes)
    return {key: value for key, value in message.items() if value is not None}


JSON = {"Content-Type": "application/json"}
SEND = "/api/v1/messages/send"
BATCH = "/api/v1/messages/batch"
BROADCAST = "/api/v1/messages/broadcast"


def _publish(name: str, body: bytes | Callable | None, status: int, code: str | None,
             path: str = SEND, auth: str | None = "publisher",
             headers: dict[str, str] | None = None, **kwargs: Any) -> Case:
    return Case(name, "POST", path, status, code, auth=auth, body=body,
                headers=JSON if headers is None else headers, **kwargs)


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _chunked_oversize() -> Iterator[bytes]:
    chunk = b" " * 16384
    yield b'{"type":"info","service":"knowledge-service","data":{"pad":"'
    for _ in range(MAX_REQUEST_BYTES // len(chunk) + 2):
        yield chunk
    yield b'"}}'


PUBLISH_CASES = [
    # Bodies that are not JSON, or not the JSON we take.
    _publish("malformed JSON", b'{"type": "info", "service": ', 400, "invalid_json"),
    _publish("truncated JSON", _json(_message())[:-7], 400, "invalid_json"),
    _publish("empty body", b"", 400, "invalid_json"),
    _publish("whitespace body", b"  \n ", 400, "invalid_json"),
    _publish("trailing garbage", _json(_message()) + b" x", 400, "invalid_json"),
    _publish("single quotes", b"{'type': 'info'}", 400, "invalid_json"),
    _publish("NaN literal", b'{"type":"info","service":"s","data":{"x":NaN}}', 400,
             "invalid_json"),
    _publish("number overflowing a double", b'{"type":"info","data":{"x":1e400}}', 400,
             "invalid_json"),
    _publish("invalid UTF-8 in a string", b'{"type":"info","service":"\xff\xfe"}', 400,
             "invalid_json"),
    _publish("overlong UTF-8 encoding", b'{"type":"info","source":"\xc0\xaf"}', 400,
             "invalid_json"),
    _publish("lone surrogate escape", b'{"type":"info","source":"\\ud800"}', 400,
             "invalid_json"),
    _publish("UTF-8 byte order mark", b"\xef\xbb\xbf" + _json(_message()), 400,
             "invalid_json"),
    _publish("nesting beyond the parser's depth", b"[" * 5000 + b"]" * 5000, 400,
             "invalid_json"),
    _publish("nesting beyond the encoder's depth", _json(_message())[:-1]
             .replace(b'"data": {"progress": 10}', b'"data": ' + _deep(300)) + b"}",
             400, "validation_failed"),
    _publish("JSON null", b"null", 400, "validation_failed"),
    _publish("JSON array to send", _json([_message()]), 400, "validation_failed"),
    _publish("JSON string", b'"hello"', 400, "validation_failed"),
    # Content types.
    _publish("no content type", _json(_message()), 415, "unsupported_media_type",
             headers={}),
    _publish("text/plain", _json(_message()), 415, "unsupported_media_type",
             headers={"Content-Type": "text/plain"}),
    _publish("form encoded", b"type=info&service=x", 415, "unsupported_media_type",
             headers={"Content-Type": "application/x-www-form-urlencoded"}),
    _publish("multipart", b"--x\r\n\r\n{}\r\n--x--", 415, "unsupported_media_type",
             headers={"Content-Type": "multipart/form-data; boundary=x"}),
    _publish("JSON in latin-1", _json(_message()), 415, "unsupported_media_type",
             headers={"Content-Type": "application/json; charset=latin-1"}),
    _publish("content type with CR LF smuggled in a parameter", _json(_message()), 415,
             "unsupported_media_type",
             headers={"Content-Type": "application/json; charset=utf-16"}),
    # Fields of the wrong type or value.
    _publish("type is a number", _json(_message(type=3)), 400, "validation_failed"),
    _publish("unknown message type", _json(_message(type="alert")), 400,
             "validation_failed"),
    _publish("type missing", _json(_message(type=None)), 400, "validation_failed"),
    _publish("service is a list", _json(_message(service=["knowledge-service"])), 400,
             "validation_failed"),
    _publish("service with CR LF", _json(_message(service="knowledge\r\nX-Evil: 1")), 400,
             "validation_failed"),
    _publish("target is a string", _json(_message(target="user:123")), 400,
             "validation_failed"),
    _publish("empty target", _json(_message(target={})), 400, "validation_failed"),
    _publish("huge target", _json(_message(target={"channel": [f"c{n}" for n in
                                                               range(5000)]})),
             400, "validation_failed"),
    _publish("target with a thousand keys", _json(_message(
        target={f"k{n}_id": "1" for n in range(1000)})), 400, "validation_failed"),
    _publish("unknown target key", _json(_message(target={"user": "123"})), 400,
             "validation_failed"),
    _publish("channel with CR LF", _json(_message(target={"channel": "a\r\nevent: x"})), 400,
             "validation_failed"),
    _publish("user id with NUL", _json(_message(target={"user_id": "12\u00003"})), 400,
             "validation_failed"),
    _publish("empty user id", _json(_message(target={"user_id": ""})), 400,
             "validation_failed"),
    _publish("channel name too long", _json(_message(target={"channel": "c" * 129})), 400,
             "validation_failed"),
    _publish("channel with a glob", _json(_message(target={"channel": "kb:*"})), 400,
             "validation_failed"),
    _publish("id with LF", _json(_message(id="msg\nid: 999")), 400, "validation_failed"),
    _publish("source with an escape sequence", _json(_message(source="ok\u001b[31m")), 400,
             "validation_failed"),
    _publish("timestamp garbage", _json(_message(timestamp="yesterday")), 400,
             "validation_failed"),
    _publish("data is a list", _json(_message(data=[1, 2])), 400, "validation_failed"),
    _publish("progress above 100", _json(_message(data={"progress": 101})), 400,
             "validation_failed"),
    _publish("ttl beyond MESSAGE_TTL", _json(_message(metadata={"ttl": 10**9})), 400,
             "validation_failed"),
    _publish("unknown top-level field", _json(_message(evil=True)), 400,
             "validation_failed"),
    _publish("a thousand unknown fields", _json({f"f{n}": n for n in range(1000)}), 400,
             "validation_failed"),
    # Sizes.
    _publish("message over MAX_MESSAGE_BYTES", _json(_message(
        data={"pad": "x" * MAX_MESSAGE_BYTES})), 413, "message_too_large"),
    _publish("body over MAX_REQUEST_BYTES", b" " * (MAX_REQUEST_BYTES * 3), 413,
             "payload_too_large"),
    _publish("chunked body over MAX_REQUEST_BYTES", _chunked_oversize, 413,
             "payload_too_large"),
    # Batches.
    _publish("batch over MAX_BATCH_SIZE", _json({"messages": [_message()] *
                                                 (MAX_BATCH_SIZE + 1)}),
             413, "batch_too_large", path=BATCH),
    _publish("empty batch", _json({"messages": []}), 400, "validation_failed", path=BATCH),
    _publish("batch is not a list", _json({"messages": {"0": _message()}}), 400,
             "validation_failed", path=BATCH),
    _publish("batch with an unknown field", _json({"messages": [_message()], "x": 1}), 400,
             "validation_failed", path=BATCH),
    _publish("batch with one bad message", _json({"messages": [_message(), _message(
        type="nope"), _message()]}), 400, "validation_failed", path=BATCH),
    _publish("batch with one impersonating message", _json({"messages": [
        _message(), _message(service="agent-service")]}), 403, "service_mismatch",
        path=BATCH),
    # Authentication on the publish API.
    _publish("no token", _json(_message()), 401, "missing_token", auth=None),
    _publish("token in the query of the publish API", _json(_message()), 401,
             "missing_token", auth=None, query_token="publisher"),
    _publish("token in a cookie on the publish API", _json(_message()), 401,
             "missing_token", auth=None, cookie="publisher"),
    _publish("Basic credentials", _json(_message()), 401, "invalid_token", auth=None,
             headers={**JSON, "Authorization": "Basic a25vd2xlZGdlOnNlY3JldA=="}),
    _publish("empty Bearer", _json(_message()), 401, "invalid_token", auth=None,
             headers={**JSON, "Authorization": "Bearer "}),
    _publish("garbage token", _json(_message()), 401, "invalid_token", auth="garbage"),
    _publish("oversized token", _json(_message()), 401, "invalid_token", auth="huge"),
    _publish("forged signature", _json(_message()), 401, "invalid_token", auth="forged"),
    _publish("tampered payload", _json(_message()), 401, "invalid_token", auth="tampered"),
    _publish("alg none", _json(_message()), 401, "invalid_token", auth="alg_none"),
    _publish("alg NONE", _json(_message()), 401, "invalid_token", auth="alg_none_upper"),
    _publish("algorithm confusion: HS256 keyed with the RSA public key", _json(_message()),
             401, "invalid_token", auth="alg_confusion"),
    _publish("algorithm not in JWT_ALGORITHMS", _json(_message()), 401, "invalid_token",
             auth="alg_hs512"),
    _publish("expired token", _json(_message()), 401, "token_expired", auth="expired"),
    _publish("not-yet-valid token", _json(_message()), 401, "token_not_yet_valid",
             auth="not_yet_valid"),
    _publish("token issued in the future", _json(_message()), 401, "token_not_yet_valid",
             auth="issued_in_future"),
    _publish("wrong audience", _json(_message()), 401, "invalid_audience",
             auth="wrong_audience"),
    _publish("no audience", _json(_message()), 401, "invalid_token", auth="no_audience"),
    _publish("wrong issuer", _json(_message()), 401, "invalid_issuer", auth="wrong_issuer"),
    _publish("no exp", _json(_message()), 401, "invalid_token", auth="no_exp"),
    _publish("no sub", _json(_message()), 401, "invalid_token", auth="no_sub"),
    _publish("malformed push claim", _json(_message()), 401, "invalid_token",
             auth="bad_claims"),
    # Permissions.
    _publish("subscriber token publishing", _json(_message()), 403, "publish_forbidden",
             auth="subscriber"),
    _publish("publisher impersonating another service", _json(_message(
        service="agent-service")), 403, "service_mismatch"),
    _publish("RS256 publisher impersonating", _json(_message()), 403, "service_mismatch",
             auth="rs256_publisher"),
    _publish("publisher outside its topic patterns", _json(_message(
        target={"task_id": "t1"})), 403, "topic_forbidden"),
    _publish("publisher writing to another service's topic", _json(_message(
        target={"channel": "service:agent-service"})), 403, "service_mismatch"),
    _publish("publisher writing to another service via service_id", _json(_message(
        target={"service_id": "agent-service"})), 403, "service_mismatch"),
    _publish("broadcast without permission", _json(_message(target=None)), 403,
             "broadcast_forbidden", path=BROADCAST),
    _publish("malformed broadcast", b"{", 400, "invalid_json", path=BROADCAST),
    # Methods and paths.
    Case("GET on the publish API", "GET", SEND, 405, "method_not_allowed", auth="publisher"),
    # /api/v1/messages/{id} is a message's delivery status (GET): another method there
    # is a 405, whatever the id.
    Case("CR LF in the publish path", "POST", SEND + "%0D%0AX-Evil:%201", 405,
         "method_not_allowed", auth="publisher", body=_json(_message()), headers=JSON),
    Case("unknown API path", "POST", "/api/v1/messages/send/all", 404, "not_found",
         auth="publisher", body=_json(_message()), headers=JSON),
]

SSE_CASES = [
    Case("stream without a token", "GET", "/sse/user/123", 401, "missing_token"),
    Case("expired token in the query", "GET", "/sse/user/123", 401, "token_expired",
         query_token="expired"),
    Case("expired cookie is not anonymous access", "GET", "/sse/user/123", 401,
         "token_expired", cookie="expired"),
    Case("expired header beats a good cookie", "GET", "/sse/user/123", 401, "token_expired",
         auth="expired", cookie="subscriber"),
    Case("forged token in the query", "GET", "/sse/user/123", 401, "invalid_token",
         query_token="forged"),
    Case("alg none in the query", "GET", "/sse/user/123", 401, "invalid_token",
         query_token="alg_none"),
    Case("subject with a line break", "GET", "/sse/user/123", 401, "invalid_token",
         auth="sub_with_newline"),
    Case("another user's stream", "GET", "/sse/user/456", 403, "topic_forbidden",
         auth="subscriber"),
    Case("another user's topic as a channel", "GET", "/sse/stream/user:456", 403,
         "topic_forbidden", auth="subscriber"),
    Case("one forbidden channel among allowed ones", "GET",
         "/sse/stream/kb:kb789,task:t1,kb:secret", 403, "topic_forbidden", auth="subscriber"),
    Case("a forbidden channel in the query", "GET", "/sse/stream/kb:kb789?channel=kb:other",
         403, "topic_forbidden", auth="subscriber"),
    Case("a service stream without a pattern", "GET", "/sse/service/knowledge-service", 403,
         "topic_forbidden", auth="subscriber"),
    Case("someone else's session", "GET", "/sse/user/123?session_id=s9", 403,
         "topic_forbidden", auth="subscriber"),
    Case("a publisher reading a user stream", "GET", "/sse/user/123", 403, "topic_forbidden",
         auth="publisher"),
    Case("more channels than MAX_CHANNELS_PER_CONNECTION", "GET",
         "/sse/stream/" + ",".join(f"task:{n}" for n in range(MAX_CHANNELS + 1)), 400,
         "too_many_channels", auth="subscriber"),
    Case("channels only commas", "GET", "/sse/stream/,,,", 400, "invalid_channel",
         auth="subscriber"),
    Case("channel name too long", "GET", "/sse/stream/" + "c" * 129, 400, "invalid_channel",
         auth="subscriber"),
    Case("invalid UTF-8 in the path", "GET", "/sse/user/%FF%FE", 400, "invalid_user_id",
         auth="subscriber"),
    Case("non-ASCII user id", "GET", "/sse/user/%E7%94%A8%E6%88%B7", 400, "invalid_user_id",
         auth="subscriber"),
    Case("slash smuggled into a user id", "GET", "/sse/user/123%2F..%2F456", 404, "not_found",
         auth="subscriber"),
    Case("POST to a stream", "POST", "/sse/user/123", 405, "method_not_allowed",
         auth="subscriber"),
]

# CR, LF, CRLF and NUL in every path and query parameter of the stream endpoints.
INJECTIONS = {"CR": "%0D", "LF": "%0A", "CRLF": "%0D%0A", "NUL": "%00"}
PARAMETERS = {
    # where: (path template, expected status, expected code or event)
    "user_id in the path": ("/sse/user/1{x}2", 400, "invalid_user_id"),
    "service name in the path": ("/sse/service/svc{x}", 400, "invalid_service_name"),
    "channel in the path": ("/sse/stream/kb:kb789{x}event:%20x", 400, "invalid_channel"),
    "channel in the query": ("/sse/stream/kb:kb789?channel=a{x}b", 400, "invalid_channel"),
    "session_id": ("/sse/user/123?session_id=s{x}1", 400, "invalid_session_id"),
    "named": ("/sse/user/123?named=1{x}", 400, "invalid_parameter"),
    "heartbeat_events": ("/sse/user/123?heartbeat_events={x}", 400, "invalid_parameter"),
    "token": ("/sse/user/123?token=eyJ{x}", 401, "invalid_token"),
    # A resume point that is not one of ours: the stream opens and says so in-band.
    "last_event_id": ("/sse/user/123?last_event_id=1-1{x}data:%20x", 200, "history-lost"),
}
for where, (template, status, expected) in PARAMETERS.items():
    for label, encoded in INJECTIONS.items():
        is_stream = status == 200
        SSE_CASES.append(Case(
            f"{label} in {where}", "GET", template.format(x=encoded), status,
            None if is_stream else expected, event=expected if is_stream else None,
            auth=None if where == "token" else "subscriber"))

CASES = PUBLISH_CASES + SSE_CASES


# -- running them -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> Keys2:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    public = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return Keys2(private, public)


@pytest.fixture(scope="module")
def tokens(keys: Keys2) -> dict[str, Callable[[], str]]:
    return _token_factories(keys)


@pytest.fixture(scope="module")
def target(service, keys: Keys2):
    return service(
        ENABLE_AUTH="true", JWT_SECRET=SECRET, JWT_ALGORITHMS="HS256,RS256",
        JWT_PUBLIC_KEY=keys.public, JWT_ISSUER=ISSUER, JWT_AUDIENCE=AUDIENCE,
        MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES), MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
        MAX_BATCH_SIZE=str(MAX_BATCH_SIZE), MAX_CHANNELS_PER_CONNECTION=str(MAX_CHANNELS),
        HEARTBEAT_INTERVAL="0.2",
        CORS_ORIGINS='["http://app.example"]',
    )


@pytest.fixture(scope="module")
def stream_length(target) -> Callable[[], int]:
    client = redis.Redis.from_url(target.redis_url)
    key = Keys("pushservice").stream
    yield lambda: published_count(client, key)
    client.close()


def _send(target, case: Case, tokens) -> tuple[int, dict[str, str], bytes, list]:
    """Send ``case``; returns status, headers (lower-case names), body and SSE frames."""
    headers = {"Origin": "http://app.example", **case.headers}
    if case.auth:
        headers["Authorization"] = f"Bearer {tokens[case.auth]()}"
    if case.cookie:
        headers["Cookie"] = f"pushservice_token={tokens[case.cookie]()}"
    path = case.path
    if case.query_token:
        path += ("&" if "?" in path else "?") + f"token={tokens[case.query_token]()}"
    if case.method == "GET" and path.startswith("/sse/"):
        with SSEClient(target.url(path), headers=headers) as client:
            if client.status == 200:
                frames = client.collect(2, timeout=5, predicate=lambda f: f.dispatches)
                return client.status, client.headers, b"", frames
            return client.status, client.headers, client.read_body(), []
    body = case.body() if callable(case.body) else case.body
    response = target.request(case.method, path, data=body, headers=headers)
    return (response.status_code, {k.lower(): v for k, v in response.headers.items()},
            response.content, [])


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_request(case: Case, target, tokens, stream_length):
    before = stream_length()
    status, headers, body, frames = _send(target, case, tokens)

    assert status == case.status, (status, body[:500])
    if case.code is not None:
        assert headers["content-type"].startswith("application/json")
        error = json.loads(body)["error"]
        assert error["code"] == case.code, error
        assert isinstance(error["message"], str) and error["message"]
        assert set(error) == {"code", "message", "details"}
        # Even refusals tell the listed origin what happened.
        assert headers.get("access-control-allow-origin") == "http://app.example"
        if status == 401:
            assert headers["www-authenticate"].startswith('Bearer realm="pushservice"')
    if case.event is not None:
        assert [frame.event for frame in frames] == ["connected", case.event]
        assert frames[1].json()["reason"] == "malformed_last_event_id"
        assert all(frame.event in CONTROL_EVENTS for frame in frames)

    assert stream_length() == before, "a refused request wrote to the stream"
    wait_until(lambda: target.open_connections() == 0, 5,
               message="the connection to be released")


def test_the_same_instance_serves_good_requests(target, tokens, stream_length):
    """The refusals above are the request's fault, not the instance's."""
    headers = {"Authorization": f"Bearer {tokens['subscriber']()}"}
    with SSEClient(target.url("/sse/stream/kb:kb789,user:123,task:t1"),
                   headers=headers) as client:
        client.wait_for(lambda frame: frame.event == "connected")
        before = stream_length()
        for token, message in ((tokens["publisher"](), _message()),
                               (tokens["rs256_publisher"](), _message(service="agent-service"))):
            response = target.post(SEND, json=message,
                                   headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 202, response.text
        received = client.collect(2, predicate=lambda f: f.dispatches
                                  and f.event not in CONTROL_EVENTS)
        assert [frame.json()["service"] for frame in received] == [
            "knowledge-service", "agent-service"]
        assert stream_length() == before + 2
    wait_until(lambda: target.open_connections() == 0, 5, message="the stream to be released")
    assert requests.get(target.url("/health"), timeout=5).status_code == 200
