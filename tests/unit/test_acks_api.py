"""The delivery confirmation API through Flask's test client, with Redis on fakeredis:
acknowledging as the receiving user, the publisher's status, and what is refused."""

from __future__ import annotations

import json

import pytest

from pushservice import create_app
from pushservice.auth import build_claims, mint_token
from pushservice.settings import Settings

SECRET = "0123456789abcdef0123456789abcdef-ack-tests"
ORIGIN = "http://app.example"


def token(subject: str, **claims) -> str:
    return mint_token(build_claims(subject, **claims), SECRET)


def bearer(subject: str, **claims) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(subject, **claims)}"}


PUBLISHER = {"service": "svc", "publish": ["user:*"]}


@pytest.fixture
def app(fake_clients):
    app = create_app(Settings(jwt_secret=SECRET, max_ack_batch_size=5, cors_origins=(ORIGIN,)))
    yield app
    app.extensions["pushservice"].store.close()


@pytest.fixture
def client(app):
    return app.test_client()


def publish(client, user: str = "u1", service: str = "svc", **metadata) -> str:
    response = client.post("/api/v1/messages/send", headers=bearer(
        f"{service}-publisher", service=service, publish=["user:*"]), json={
        "type": "info", "service": service, "target": {"user_id": user},
        "metadata": {"require_ack": True, **metadata}})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


def ack(client, message_id: str, user: str | None = "u1", **kwargs):
    headers = bearer(user) if user else {}
    kwargs.setdefault("json", {})
    return client.post(f"/api/v1/messages/{message_id}/ack", headers=headers, **kwargs)


def error_code(response, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]["code"]


def test_the_user_acknowledges_once_and_a_repeat_is_harmless(client):
    message_id = publish(client)

    first = ack(client, message_id)
    assert first.status_code == 200
    assert first.get_json()["status"] == "acknowledged" and first.get_json()["user"] == "u1"
    again = ack(client, message_id)
    assert again.get_json()["status"] == "already_acknowledged"
    assert again.get_json()["acknowledged_at"] == first.get_json()["acknowledged_at"]


def test_another_user_is_refused_and_unknown_ids_are_not_found(client):
    message_id = publish(client)

    assert error_code(ack(client, message_id, "u2"), 403) == "ack_forbidden"
    assert error_code(ack(client, "no-such-message"), 404) == "message_not_found"
    assert error_code(ack(client, "bad id!"), 400) == "invalid_message_id"
    assert error_code(ack(client, message_id, None), 401) == "missing_token"
    # The refused attempt recorded nothing: the user it was for still acknowledges it.
    assert ack(client, message_id).get_json()["status"] == "acknowledged"


def test_an_expired_message_is_not_found(client):
    message_id = publish(client, ttl=1)
    client.application.extensions["pushservice"].acks.connections.command.hset(
        f"{{pushservice}}:ack:{message_id}", "expires", 1)

    response = ack(client, message_id)
    assert error_code(response, 404) == "message_not_found"
    assert response.get_json()["error"]["details"]["reason"] == "expired"


def test_acknowledgements_must_be_json_so_no_other_site_can_forge_them(client):
    message_id = publish(client)
    form = client.post(f"/api/v1/messages/{message_id}/ack", headers=bearer("u1"),
                       data={"x": "1"})
    assert error_code(form, 415) == "unsupported_media_type"
    plain = client.post(f"/api/v1/messages/{message_id}/ack", headers=bearer("u1"),
                        data="{}", content_type="text/plain")
    assert error_code(plain, 415) == "unsupported_media_type"
    empty = client.post(f"/api/v1/messages/{message_id}/ack", headers=bearer("u1"),
                        content_type="application/json")
    assert empty.status_code == 200


def test_a_batch_acknowledges_all_or_nothing_and_lists_the_unknown(client):
    mine = [publish(client), publish(client)]
    theirs = publish(client, user="u2")

    refused = client.post("/api/v1/messages/ack", headers=bearer("u1"),
                          json={"ids": [*mine, theirs]})
    assert error_code(refused, 403) == "ack_forbidden"
    assert refused.get_json()["error"]["details"]["ids"] == [theirs]

    done = client.post("/api/v1/messages/ack", headers=bearer("u1"),
                       json={"ids": [mine[0], mine[0], mine[1], "gone"]})
    assert done.status_code == 200
    body = done.get_json()
    assert body["acknowledged"] == 2
    assert [(r["id"], r["status"]) for r in body["results"]] == [
        (mine[0], "acknowledged"), (mine[1], "acknowledged"), ("gone", "not_found")]


@pytest.mark.parametrize("body, status, code", [
    ({"ids": [f"m{n}" for n in range(6)]}, 413, "too_many_ids"),
    ({"ids": []}, 400, "validation_failed"),
    ({"ids": "m1"}, 400, "validation_failed"),
    ({"ids": ["m1", 7, "a b"]}, 400, "invalid_message_id"),
    ({"ids": ["m1"], "extra": 1}, 400, "validation_failed"),
    ([], 400, "invalid_json"),
])
def test_malformed_batches_are_refused_clearly(client, body, status, code):
    response = client.post("/api/v1/messages/ack", headers=bearer("u1"), json=body)
    assert error_code(response, status) == code


def test_a_huge_batch_body_is_refused_before_it_is_parsed(client):
    ids = json.dumps({"ids": ["x" * 100] * 5000})
    response = client.post("/api/v1/messages/ack", headers=bearer("u1"), data=ids,
                           content_type="application/json")
    assert error_code(response, 413) == "payload_too_large"


def test_a_browser_acknowledges_with_the_cookie_or_a_token_in_the_query(client):
    message_id, other = publish(client), publish(client)
    set_cookie = client.post("/api/v1/auth/cookie", headers=bearer("u1"))
    paths = {header.split("Path=")[1].split(";")[0]
             for header in set_cookie.headers.getlist("Set-Cookie")}
    assert paths == {"/sse/", "/api/v1/messages/"}

    with_cookie = client.post(f"/api/v1/messages/{message_id}/ack", json={},
                              headers={"Origin": ORIGIN})
    assert with_cookie.status_code == 200
    assert with_cookie.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert with_cookie.headers["Access-Control-Allow-Credentials"] == "true"
    client.delete_cookie("pushservice_token", path="/api/v1/messages/")
    assert error_code(client.post(f"/api/v1/messages/{other}/ack", json={}), 401) == (
        "missing_token")
    in_query = client.post(f"/api/v1/messages/{other}/ack?token={token('u1')}", json={})
    assert in_query.status_code == 200


def test_the_preflight_of_a_json_acknowledgement_allows_the_listed_origin_only(client):
    asked = {"Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}
    allowed = client.options("/api/v1/messages/m1/ack", headers={"Origin": ORIGIN, **asked})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    other = client.options("/api/v1/messages/m1/ack",
                           headers={"Origin": "http://evil.example", **asked})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_the_publisher_and_admins_see_the_status_no_one_else(client):
    message_id = publish(client, priority="high")

    status = client.get(f"/api/v1/messages/{message_id}", headers=bearer("p", **PUBLISHER))
    assert status.status_code == 200
    body = status.get_json()
    assert body["state"] == "pending" and body["priority"] == "high"
    assert body["topics"] == ["user:u1", "service:svc"]
    assert body["users"][0]["user"] == "u1" and body["acknowledged_by"] == []
    admin = client.get(f"/api/v1/messages/{message_id}", headers=bearer("ops", roles=["admin"]))
    assert admin.status_code == 200
    other = client.get(f"/api/v1/messages/{message_id}",
                       headers=bearer("q", service="other", publish=["user:*"]))
    assert error_code(other, 403) == "status_forbidden"
    assert error_code(client.get(f"/api/v1/messages/{message_id}", headers=bearer("u1")),
                      403) == "status_forbidden"
    assert error_code(client.get("/api/v1/messages/nothing", headers=bearer("p", **PUBLISHER)),
                      404) == "message_not_found"

    ack(client, message_id)
    after = client.get(f"/api/v1/messages/{message_id}", headers=bearer("p", **PUBLISHER))
    assert after.get_json()["state"] == "acknowledged"
    assert [entry["user"] for entry in after.get_json()["acknowledged_by"]] == ["u1"]


def test_the_status_of_many_at_once(client):
    first, second = publish(client), publish(client)
    theirs = publish(client, service="other")

    response = client.post("/api/v1/messages/status", headers=bearer("p", **PUBLISHER),
                           json={"ids": [first, second, "unknown"]})
    assert response.status_code == 200
    body = response.get_json()
    assert [m["id"] for m in body["messages"]] == [first, second]
    assert body["not_found"] == ["unknown"]
    refused = client.post("/api/v1/messages/status", headers=bearer("p", **PUBLISHER),
                          json={"ids": [first, theirs]})
    assert error_code(refused, 403) == "status_forbidden"


def test_the_publish_endpoints_keep_answering_405_to_get(client):
    for name in ("send", "broadcast", "batch", "ack", "status"):
        assert error_code(client.get(f"/api/v1/messages/{name}",
                                     headers=bearer("p", **PUBLISHER)), 405) == (
            "method_not_allowed")


def test_another_service_cannot_reuse_an_id_that_waits_for_acknowledgement(client):
    headers = bearer("p", service="svc", publish=["user:*"])
    first = client.post("/api/v1/messages/send", headers=headers, json={
        "id": "order-1", "type": "info", "service": "svc", "target": {"user_id": "u1"},
        "metadata": {"require_ack": True}})
    assert first.status_code == 202
    taken = client.post("/api/v1/messages/send",
                        headers=bearer("q", service="other", publish=["user:*"]), json={
        "id": "order-1", "type": "info", "service": "other", "target": {"user_id": "u1"},
        "metadata": {"require_ack": True}})
    assert error_code(taken, 409) == "message_id_taken"


def test_without_authentication_the_body_names_the_user(fake_clients):
    app = create_app(Settings(enable_auth=False))
    client = app.test_client()
    message_id = publish(client)

    assert error_code(client.post(f"/api/v1/messages/{message_id}/ack",
                                  json={"user_id": "u2"}), 403) == "ack_forbidden"
    done = client.post(f"/api/v1/messages/{message_id}/ack", json={"user_id": "u1"})
    assert done.get_json()["user"] == "u1" and done.get_json()["status"] == "acknowledged"
    app.extensions["pushservice"].store.close()
