"""The admin blueprint through Flask's test client, on fakeredis: who gets the dashboard
and its data (a bearer token or the dashboard's cookie with the admin role, from the
service's own pages only), the sign-in form for everyone else, and test messages."""

from __future__ import annotations

import orjson
import pytest

from pushservice import create_app
from pushservice.auth import build_claims, mint_token
from pushservice.settings import Settings

SECRET = "unit-admin-0123456789abcdef0123456789abcdef"


def token(subject: str = "ops", **claims) -> str:
    return mint_token(build_claims(subject, **claims), SECRET)


ADMIN = {"Authorization": f"Bearer {token(roles=['admin'])}"}
USER = {"Authorization": f"Bearer {token('123', subscribe=['*'])}"}


@pytest.fixture
def app(fake_clients):
    app = create_app(Settings(jwt_secret=SECRET, instance_name="alpha"))
    yield app
    app.extensions["pushservice"].store.close()


@pytest.fixture
def client(app):
    return app.test_client()


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


def signed_in(client) -> None:
    assert client.post("/admin/session", headers=ADMIN).status_code == 204


# -- the page -----------------------------------------------------------------------------


def test_without_a_token_the_page_is_its_sign_in_form(client):
    response = client.get("/admin/")

    assert response.status_code == 401
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'id="sign-in"' in page and 'name="token"' in page
    assert "Sign in with an admin token." in page
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["Cache-Control"] == "no-store"


def test_a_token_without_the_admin_role_gets_the_form_again_with_403(client):
    response = client.get("/admin/", headers=USER)

    assert response.status_code == 403
    page = response.get_data(as_text=True)
    assert 'id="sign-in"' in page and "needs the admin role" in page
    assert "dashboard.js" not in page


def test_an_admin_gets_the_dashboard(client):
    response = client.get("/admin/", headers=ADMIN)

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "dashboard.js" in page and "<script>" not in page  # no inline script
    for asset in ("dashboard.js", "chart.js", "connections.js", "health.js", "tail.js",
                  "util.js", "login.js", "admin.css"):
        assert client.get(f"/static/admin/{asset}").status_code == 200, asset


def test_without_authentication_the_dashboard_is_open(fake_clients):
    client = create_app(Settings(enable_auth=False)).test_client()

    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/connections").status_code == 200


# -- the cookie ---------------------------------------------------------------------------


def test_signing_in_keeps_an_admins_token_in_a_cookie_for_the_dashboard_only(client):
    refused = client.post("/admin/session", headers=USER)
    assert refused.status_code == 403 and error_code(refused) == "admin_required"
    assert "Set-Cookie" not in refused.headers

    response = client.post("/admin/session", headers=ADMIN)

    assert response.status_code == 204
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("pushservice_token=")
    for attribute in ("Path=/admin/", "HttpOnly", "SameSite=Strict", "Max-Age="):
        assert attribute in cookie
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/instances").status_code == 200
    assert client.get("/api/v1/connections").status_code == 401  # not sent there


def test_the_cookie_is_refused_on_requests_from_other_sites(client):
    signed_in(client)

    other_origin = client.get("/admin/connections", headers={"Origin": "http://evil.example"})
    cross_site = client.get("/admin/connections", headers={"Sec-Fetch-Site": "cross-site"})
    same_origin = client.get("/admin/connections", headers={"Origin": "http://localhost",
                                                            "Sec-Fetch-Site": "same-origin"})

    assert other_origin.status_code == 403 and error_code(other_origin) == "cross_origin_cookie"
    assert cross_site.status_code == 403
    assert same_origin.status_code == 200


def test_a_cookie_without_the_admin_role_or_expired_gets_nothing(client):
    client.set_cookie("pushservice_token", token("123"), path="/admin/")
    assert error_code(client.get("/admin/connections")) == "admin_required"
    client.set_cookie("pushservice_token", token(roles=["admin"], ttl_seconds=-60),
                      path="/admin/")
    assert error_code(client.get("/admin/connections")) == "token_expired"


def test_signing_out_removes_the_cookie_without_a_token(client):
    signed_in(client)

    response = client.delete("/admin/session")

    assert response.status_code == 204
    assert "Path=/admin/" in response.headers["Set-Cookie"]
    assert client.get("/admin/").status_code == 401


# -- the event stream ---------------------------------------------------------------------


def test_the_event_stream_refuses_anyone_but_an_admin(client):
    assert error_code(client.get("/admin/events")) == "missing_token"
    assert client.get("/admin/events", headers=USER).status_code == 403
    assert error_code(client.get("/admin/events", headers=ADMIN, query_string={
        "topic": "user 1"})) == "invalid_topic"
    assert error_code(client.get("/admin/events", headers=ADMIN, query_string={
        "topc": "x"})) == "invalid_parameter"


def test_an_admin_gets_the_greeting_and_the_figures(client):
    response = client.get("/admin/events?topic=user:*", headers=ADMIN, buffered=False)
    try:
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert response.headers["X-Accel-Buffering"] == "no"
        chunks = iter(response.response)
        hello, figures = next(chunks).decode(), next(chunks).decode()
    finally:
        response.close()

    assert "event: hello" in hello
    greeting = orjson.loads(hello.split("data: ", 1)[1])
    assert greeting == {"viewer": "ops", "auth": True, "instance": "alpha", "topic": "user:*"}
    assert figures.startswith("event: figures")
    assert "connections" in orjson.loads(figures.split("data: ", 1)[1].split("\n")[0])


# -- connections and test messages --------------------------------------------------------


def test_the_connection_api_answers_the_dashboards_cookie(client):
    signed_in(client)

    listed = client.get("/admin/connections", query_string={"limit": "5"})
    missing = client.delete("/admin/connections/c000000000000nope")

    assert listed.status_code == 200 and listed.get_json()["connections"] == []
    assert missing.status_code == 404 and error_code(missing) == "connection_not_found"
    assert error_code(client.get("/admin/connections?limit=0")) == "invalid_limit"


def test_a_test_message_is_published_as_this_service(client, app, fake_redis):
    signed_in(client)

    response = client.post("/admin/messages", json={
        "type": "info", "target": {"channel": "admin-test"}, "data": {"text": "你好"}})

    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert body["topics"] == ["admin-test", "service:pushservice"]
    ((_, fields),) = fake_redis.xrange(app.extensions["pushservice"].store.stream_key)
    message = orjson.loads(fields[b"m"])
    assert message["service"] == "pushservice" and message["source"] == "admin-dashboard"
    assert message["data"] == {"text": "你好"}


def test_a_test_message_is_checked_like_any_other(client):
    signed_in(client)

    impersonating = client.post("/admin/messages", json={"type": "info", "service": "billing"})
    invalid = client.post("/admin/messages", json={"type": "bogus"})
    not_json = client.post("/admin/messages", data="type=info",
                           content_type="application/x-www-form-urlencoded")

    assert impersonating.status_code == 400
    assert impersonating.get_json()["error"]["details"][0]["field"] == "service"
    assert invalid.status_code == 400 and error_code(invalid) == "validation_failed"
    assert not_json.status_code == 415
    assert client.post("/admin/messages", json={"type": "info"},
                       headers=USER).status_code == 403
