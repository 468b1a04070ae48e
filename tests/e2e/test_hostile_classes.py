"""Classes of hostile input, each closed for every case of it, against the real service
(gunicorn with gevent workers, real Redis):

- label values come from closed sets, whatever a client sends (invented HTTP methods,
  unrouted paths), and a scrape stays small;
- a request body is read within a deadline, broken framing is a 400, and a connection
  whose framing is unknown is closed after the answer;
- errors gunicorn answers itself (an unparsable request) are JSON like every other;
- time claims are numbers of seconds, or the token is refused (never a 500);
- a number is delivered exactly as sent, or refused;
- what failed in Redis is said without Redis's own words (its host and port).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
import requests

from pushservice.auth import build_claims, mint_token
from tests.support.sse_client import SSEClient
from tests.support.waiting import wait_until

SECRET = "e2e-hostile-classes-0123456789abcdef0123456789"
TIMEOUT_S = 2.0  # REQUEST_TIMEOUT_SECONDS of the instance under attack
MARGIN_S = 1.5  # a loaded machine's slack on top of a deadline


@pytest.fixture(scope="module")
def target(service):
    return service(ENABLE_AUTH="true", JWT_SECRET=SECRET,
                   REQUEST_TIMEOUT_SECONDS=str(TIMEOUT_S))


def _publisher() -> dict[str, str]:
    token = mint_token(build_claims("svc", service="knowledge-service",
                                    publish=["user:*", "channel:*"]), SECRET)
    return {"Authorization": f"Bearer {token}"}


def _raw(target, request: bytes, wait: float = 10.0) -> tuple[int, dict, bytes, bool, float]:
    """Send raw bytes; return status, headers, body, whether the server closed the
    connection after its answer, and how long the answer took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", target.port), timeout=wait) as sock:
        sock.sendall(request)
        data = b""
        closed = False
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), None)
                if length is not None and len(body) >= length:
                    sock.settimeout(1.0)  # the answer is whole: is the connection closed?
    took = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines[1:])}
    return status, headers, body, closed, took


def _json_error(headers: dict, body: bytes) -> dict:
    assert headers["content-type"].startswith("application/json"), (headers, body[:200])
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message", "details"} and error["message"]
    return error


SEND = (b"POST /api/v1/messages/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nAuthorization: " + _publisher()["Authorization"].encode() + b"\r\n")


# -- metrics: closed label sets -------------------------------------------------------


def test_invented_methods_and_paths_do_not_grow_the_metrics(target):
    before = len(target.get("/metrics").content)
    session = requests.Session()
    for n in range(1500):
        session.request(f"M{n:05d}X", target.url(f"/nowhere/{n}"), timeout=10)
    scrape = target.get("/metrics")
    text = scrape.text
    assert scrape.status_code == 200
    assert "M0000" not in text and "/nowhere" not in text
    methods = {part.split('"')[0] for part in text.split('method="')[1:]}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    # Two new series at most (one per label set that appeared): bytes, not megabytes.
    assert len(scrape.content) < before + 20_000, (before, len(scrape.content))


# -- request bodies -------------------------------------------------------------------


@pytest.mark.parametrize("framing", [
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: " + b"a" * 70_000 + b"\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n",
], ids=["bad chunk size", "missing CRLF", "oversized trailer", "negative size"])
def test_broken_chunked_framing_is_a_400_and_the_connection_closes(target, framing):
    status, headers, body, closed, _ = _raw(target, SEND + framing)
    assert status == 400, body[:300]
    assert _json_error(headers, body)["code"] in ("invalid_body", "bad_request")
    assert closed


@pytest.mark.parametrize("request_bytes", [
    SEND + b"Content-Length: 100\r\n\r\n{\"type\":",  # a short body, never completed
    SEND + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"ty",  # a chunk never completed
    SEND + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFF\r\nabc",  # a huge chunk size
], ids=["short body", "stalled chunk", "huge chunk size"])
def test_a_body_that_does_not_arrive_is_answered_408_in_time(target, request_bytes):
    status, headers, body, closed, took = _raw(target, request_bytes)
    assert status == 408, body[:300]
    assert _json_error(headers, body)["code"] == "request_timeout"
    assert closed
    assert took <= TIMEOUT_S + MARGIN_S


def test_a_body_nobody_reads_does_not_hold_the_connection(target):
    request_bytes = b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc"
    status, headers, body, closed, took = _raw(target, request_bytes)
    assert status == 405
    assert _json_error(headers, body)["code"] == "method_not_allowed"
    assert closed and took <= MARGIN_S


# -- gunicorn's own errors ------------------------------------------------------------


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /sse/user/1?token=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: 1\r\n" % n for n in range(200)) + b"\r\n", 431),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n", 400),
], ids=["request line too long", "header too large", "too many headers", "garbage",
        "unsupported transfer coding", "unknown HTTP version"])
def test_requests_gunicorn_refuses_get_json_errors(target, request_bytes, status):
    got, headers, body, _, _ = _raw(target, request_bytes)
    assert got == status, body[:300]
    _json_error(headers, body)


def test_a_token_of_8_kib_fits_in_the_query_and_in_the_header(target):
    claims = build_claims("user-1", subscribe=["user:user-1"])
    claims["pad"] = "p" * 5800  # a big token, under MAX_TOKEN_BYTES
    token = mint_token(claims, SECRET)
    assert len(token) > 7900
    for url, headers in ((target.url(f"/sse/user/user-1?token={token}"), {}),
                         (target.url("/sse/user/user-1"), {"Authorization": f"Bearer {token}"})):
        with SSEClient(url, headers=headers) as client:
            assert client.status == 200


# -- time claims ----------------------------------------------------------------------


@pytest.mark.parametrize("exp", [1e300, 253_402_300_800, int(time.time() + 3600) * 1000,
                                 str(int(time.time() + 3600))],
                         ids=["1e300", "past year 9999", "milliseconds", "numeric string"])
def test_time_claims_that_are_not_seconds_are_refused_not_500(target, exp):
    claims = build_claims("user-1", subscribe=["user:user-1"])
    claims["exp"] = exp
    token = mint_token(claims, SECRET)
    for response in (
        target.post("/api/v1/auth/cookie", headers={"Authorization": f"Bearer {token}"}),
        target.get("/sse/user/user-1", params={"token": token}, stream=True, timeout=5),
    ):
        assert response.status_code == 401, response.text[:300]
        assert _json_error({k.lower(): v for k, v in response.headers.items()},
                           response.content)["code"] == "invalid_token"
        response.close()


# -- numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("number", [b"18446744073709551616", b"-9223372036854775809",
                                    b"123456789012345678901234567890"])
def test_numbers_beyond_64_bits_are_refused_not_rounded(target, number):
    body = (b'{"type":"info","service":"knowledge-service","target":{"user_id":"1"},'
            b'"data":{"n":' + number + b'}}')
    response = target.post("/api/v1/messages/send", data=body,
                           headers={**_publisher(), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_failed"


def test_a_long_digit_string_is_delivered_as_sent(target):
    headers = {"Authorization": "Bearer " + mint_token(
        build_claims("1", subscribe=["user:1"]), SECRET)}
    with SSEClient(target.url("/sse/user/1"), headers=headers) as client:
        client.wait_for(lambda frame: frame.event == "connected")
        body = (b'{"type":"info","service":"knowledge-service","target":{"user_id":"1"},'
                b'"data":{"s":"123456789012345678901234567890","n":9223372036854775807}}')
        response = target.post("/api/v1/messages/send", data=body,
                               headers={**_publisher(), "Content-Type": "application/json"})
        assert response.status_code == 202, response.text
        frame = client.wait_for(lambda f: f.event == "info")
        assert frame.json()["data"] == {"s": "123456789012345678901234567890",
                                        "n": 9223372036854775807}


# -- Redis's own words ----------------------------------------------------------------


def test_an_outage_is_reported_without_redis_host_or_port(service, make_redis_server):
    server = make_redis_server()
    instance = service(redis_url=server.url(0), workers=1, ENABLE_AUTH="true",
                       JWT_SECRET=SECRET, REQUEST_TIMEOUT_SECONDS=str(TIMEOUT_S))
    port = str(server.port)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    wait_until(lambda: instance.get("/health").status_code == 503, 15,
               message="health to report the outage")
    health = instance.get("/health").text
    publish = instance.post("/api/v1/messages/send", headers=_publisher(), json={
        "type": "info", "service": "knowledge-service", "target": {"user_id": "1"}})
    assert publish.status_code == 503
    for text in (health, publish.text):
        assert port not in text and "127.0.0.1" not in text, text
