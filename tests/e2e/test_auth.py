"""Authentication end to end: token expiry on open streams, the auth cookie, CORS, rate
limits across instances, start-up refusal, and tokens kept out of every log line."""

from __future__ import annotations

import os
import subprocess

import pytest
import redis
import requests

from pushservice.auth import build_claims, mint_token
from pushservice.store import Keys
from tests.support.gunicorn_server import PASSED_THROUGH, REPO_ROOT, gunicorn_command
from tests.support.ports import free_port
from tests.support.sse_client import StreamClosedError
from tests.support.streams import published_count
from tests.support.waiting import wait_until

SECRET = "e2e-auth-0123456789abcdef0123456789abcdef"
ORIGIN = "http://app.example"
CONTROL_EVENTS = {"connected", "history-lost", "closing", "heartbeat"}


def _token(subject: str = "123", **grants) -> str:
    return mint_token(build_claims(subject, **grants), SECRET)


def _publisher(service: str = "knowledge-service", **grants) -> dict[str, str]:
    grants.setdefault("publish", ["user:*"])
    return {"Authorization": f"Bearer {_token(service, service=service, **grants)}"}


def _message(n: int, user: str = "123", service: str = "knowledge-service") -> dict:
    return {"type": "progress", "service": service, "target": {"user_id": user},
            "data": {"n": n, "progress": n}}


def _is_message(frame) -> bool:
    return frame.dispatches and frame.event not in CONTROL_EVENTS


def _numbers(frames) -> list[int]:
    return [frame.json()["data"]["n"] for frame in frames]


@pytest.fixture(scope="module")
def secured(service):
    """One instance with authentication on, sharing its module's tests."""
    return service(ENABLE_AUTH="true", JWT_SECRET=SECRET, JWT_LEEWAY_SECONDS="0",
                   HEARTBEAT_INTERVAL="0.3", CORS_ORIGINS=f'["{ORIGIN}"]',
                   LOG_LEVEL="debug")


def test_a_stream_ends_when_its_token_expires_and_a_fresh_token_resumes_it(secured):
    # Expiry is counted in whole seconds: this one lives 3 to 4 s, enough to connect and
    # get three messages on a loaded machine.
    short_lived = _token("123", ttl_seconds=4)
    with secured.sse(f"/sse/user/123?token={short_lived}") as stream:
        stream.wait_for(lambda frame: frame.event == "connected")
        for n in range(3):
            assert secured.publish(_message(n), headers=_publisher()).status_code == 202
        assert _numbers(stream.collect(3, predicate=_is_message)) == [0, 1, 2]
        closing = stream.wait_for(lambda frame: frame.event == "closing", timeout=10)
        payload = closing.json()
        assert payload["reason"] == "token_expired" and "fresh token" in payload["message"]
        assert closing.retry == payload["retry_ms"]
        with pytest.raises(StreamClosedError):
            stream.next_frame(timeout=5)
        resume_from = stream.last_event_id
    for n in range(3, 6):  # while the client gets a fresh token
        assert secured.publish(_message(n), headers=_publisher()).status_code == 202
    # The old token is refused, never downgraded to anonymous access.
    with secured.sse(f"/sse/user/123?token={short_lived}") as refused:
        assert refused.status == 401 and refused.json()["error"]["code"] == "token_expired"
    headers = {"Authorization": f"Bearer {_token('123')}"}
    with secured.sse("/sse/user/123", headers=headers, last_event_id=resume_from) as again:
        assert _numbers(again.collect(3, predicate=_is_message)) == [3, 4, 5]
        again.assert_silent(0.5, _is_message)


def test_the_auth_cookie_opens_streams_and_an_expired_one_does_not(secured):
    response = secured.post("/api/v1/auth/cookie",
                            headers={"Authorization": f"Bearer {_token('77')}"})
    assert response.status_code == 204
    # One cookie for the streams, one for acknowledgements: the same token.
    cookie = response.cookies.get("pushservice_token", path="/sse/")
    assert response.cookies.get("pushservice_token", path="/api/v1/messages/") == cookie
    assert "httponly" in response.headers["Set-Cookie"].lower()
    with secured.sse("/sse/user/77", headers={"Cookie": f"pushservice_token={cookie}"}) as ok:
        assert ok.status == 200
        ok.wait_for(lambda frame: frame.event == "connected")
        secured.publish(_message(1, user="77"), headers=_publisher())
        assert _numbers(ok.collect(1, predicate=_is_message)) == [1]
    expired = _token("77", ttl_seconds=-10)
    with secured.sse("/sse/user/77", headers={"Cookie": f"pushservice_token={expired}"}) as no:
        assert no.status == 401 and no.json()["error"]["code"] == "token_expired"


def test_cors_grants_listed_origins_only_errors_included(secured):
    preflight = secured.request("OPTIONS", "/api/v1/messages/send", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert preflight.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed

    stranger = secured.request("OPTIONS", "/api/v1/messages/send", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in stranger.headers

    # A credentialed EventSource request from the listed origin gets its grant.
    with secured.sse(f"/sse/user/5?token={_token('5')}", headers={"Origin": ORIGIN}) as ok:
        assert ok.status == 200
        assert ok.headers["access-control-allow-origin"] == ORIGIN
        assert ok.headers["access-control-allow-credentials"] == "true"
    # Errors carry the same headers, so the page can read why it was refused.
    refused = secured.post("/api/v1/messages/send", json=_message(1),
                           headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "WWW-Authenticate" in refused.headers["Access-Control-Expose-Headers"]
    refused = secured.post("/api/v1/messages/send", json=_message(1),
                           headers={"Origin": "http://evil.example"})
    assert refused.status_code == 401
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_the_publish_rate_limit_holds_across_instances(service):
    limits = {"ENABLE_AUTH": "true", "JWT_SECRET": SECRET, "PUBLISH_RATE_PER_SERVICE": "1",
              "PUBLISH_BURST_PER_SERVICE": "5", "MAX_BATCH_SIZE": "5"}
    first = service(**limits)
    second = service(redis_url=first.redis_url, workers=1, **limits)
    batch = {"messages": [_message(n) for n in range(3)]}
    assert first.post("/api/v1/messages/batch", json=batch,
                      headers=_publisher()).status_code == 202
    batch = {"messages": [_message(n) for n in range(2)]}
    assert second.post("/api/v1/messages/batch", json=batch,
                       headers=_publisher()).status_code == 202
    stream = redis.Redis.from_url(first.redis_url)
    key = Keys("pushservice").stream
    try:
        assert published_count(stream, key) == 5
        for instance in (first, second):
            limited = instance.publish(_message(9), headers=_publisher())
            assert limited.status_code == 429
            assert int(limited.headers["Retry-After"]) >= 1
            error = limited.json()["error"]
            assert error["code"] == "rate_limited" and "knowledge-service" in error["message"]
        assert published_count(stream, key) == 5, "a limited publish wrote nothing"
        # Another service has its own bucket.
        other = second.publish(_message(1, service="agent-service"),
                               headers=_publisher("agent-service"))
        assert other.status_code == 202
        # The bucket refills at the configured rate.
        wait_until(lambda: first.publish(_message(10), headers=_publisher()).status_code
                   == 202, 3, interval=0.2, message="the bucket to refill")
    finally:
        stream.close()


def _run_gunicorn(env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess:
    base = {name: value for name, value in os.environ.items() if name in PASSED_THROUGH}
    base.update(SERVICE_PORT=str(free_port()), WORKERS="1",
                REDIS_URL="redis://127.0.0.1:1/0", **env)
    return subprocess.run([*gunicorn_command(), "-c", "gunicorn.conf.py", "wsgi:app"],
                          cwd=REPO_ROOT, env=base, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize("secret, says", [
    (None, "JWT_SECRET is empty"),
    ("short", "JWT_SECRET is 5 bytes"),
    ("your-secret-key", "example value"),
])
def test_with_auth_on_a_weak_secret_stops_the_service_at_start(secret, says):
    env = {"ENABLE_AUTH": "true"}
    if secret is not None:
        env["JWT_SECRET"] = secret
    result = _run_gunicorn(env)
    assert result.returncode == 2
    assert says in result.stderr and "Booting worker" not in result.stderr


def test_with_auth_off_the_service_warns_that_everything_is_open(service):
    instance = service()  # the test harness's default: ENABLE_AUTH=false
    wait_until(lambda: "every endpoint is open" in instance.output(), 5,
               message="the warning in the service's log")
    assert instance.get("/sse/user/1", stream=True).status_code == 200


def test_tokens_never_reach_the_logs(service):
    # An access log format that shows everything a token could hide in.
    access_format = ('%(h)s "%(r)s" q=%(q)s %(s)s ref=%({referer}i)s '
                     'auth=%({authorization}i)s cookie=%({cookie}i)s env=%({raw_uri}e)s')
    instance = service(
        ENABLE_AUTH="true", JWT_SECRET=SECRET, HEARTBEAT_INTERVAL="0.2", LOG_LEVEL="debug",
        extra_args=("--access-logformat", access_format))
    good, expired = _token("123"), _token("123", ttl_seconds=-60)
    publisher = _publisher()
    secrets = [good, expired, publisher["Authorization"].split()[1]]

    with instance.sse(f"/sse/user/123?named=0&token={good}",
                      headers={"Referer": f"http://app.example/?token={good}"}) as stream:
        stream.wait_for(lambda frame: frame.event == "connected")
    with instance.sse(f"/sse/user/123?token={expired}") as refused:
        assert refused.status == 401
    with instance.sse("/sse/user/123", headers={"Cookie": f"pushservice_token={expired}"}):
        pass
    assert instance.publish(_message(1), headers=publisher).status_code == 202
    assert instance.post(f"/api/v1/messages/send?token={good}", json={}).status_code == 401
    instance.get(f"/nowhere?access_token={good}")

    # The stream's line is written when the server notices the client left.
    wait_until(lambda: instance.output().count("token=[redacted]") >= 4, 10,
               message=lambda: "redacted access lines in:\n" + instance.log_tail())
    instance.stop()
    output = instance.output()
    for secret in secrets:
        assert secret not in output
        assert secret.split(".")[2] not in output  # not even the signature
    assert '"GET /sse/user/123?named=0&token=[redacted] HTTP/1.1"' in output
    assert "auth=Bearer [redacted]" in output
    assert "cookie=pushservice_token=[redacted]" in output


def test_the_development_server_does_not_log_tokens():
    import gevent

    import app as development
    from pushservice import create_app
    from pushservice.settings import Settings

    class Sink:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def write(self, text: str) -> None:
            self.lines.append(text)

    sink = Sink()
    application = create_app(Settings(jwt_secret=SECRET, redis_url="redis://127.0.0.1:1/0"))
    server = development.make_server(application, ("127.0.0.1", 0), log=sink)
    server.start()
    try:
        token = _token("123")
        url = f"http://127.0.0.1:{server.server_port}"
        # The request runs in a greenlet of this process: let the hub serve it.
        request = gevent.spawn(requests.get, f"{url}/sse/user/9?token={token}", timeout=5)
        assert request.get(timeout=10).status_code == 403
        wait_until(lambda: sink.lines, 5, message="the access line")
    finally:
        server.stop()
    text = "".join(sink.lines)
    assert token not in text and "GET /sse/user/9?token=[redacted] HTTP/1.1" in text


def test_claims_and_their_shapes_are_enforced_end_to_end(secured):
    # A subscriber who may read a knowledge base besides its own stream, in one connection.
    headers = {"Authorization": f"Bearer {_token('123', subscribe=['kb:kb789'])}"}
    with secured.sse("/sse/stream/user:123,kb:kb789", headers=headers) as stream:
        assert stream.status == 200
        stream.wait_for(lambda frame: frame.event == "connected")
        publisher = _publisher(publish=["user:*", "kb:*"])
        message = dict(_message(1), target={"kb_id": "kb789"})
        assert secured.publish(message, headers=publisher).status_code == 202
        assert _numbers(stream.collect(1, predicate=_is_message)) == [1]
    with secured.sse("/sse/stream/user:123,kb:kb789,kb:other", headers=headers) as refused:
        assert refused.status == 403
        assert refused.json()["error"]["details"]["forbidden"] == ["kb:other"]
    wait_until(lambda: secured.open_connections() == 0, 5,
               message="streams to be released")
    assert requests.get(secured.url("/health"), timeout=5).ok
