"""Delivery confirmation end to end: two instances of two gevent workers each on one Redis,
authentication on, users with real SSE connections, a real webhook receiver.

What a publisher and its users see: deliveries counted across every worker and instance,
an offline user's inbox, redeliveries of what is not acknowledged in time, acknowledged
messages never delivered again (new connection, resume, the other instance), one signed
expiry notice, inboxes and acknowledgements that survive a Redis restart (AOF), and
clear refusals of hostile acknowledgements."""

from __future__ import annotations

import itertools
import json
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from pushservice_client import verify_webhook

from pushservice.auth import build_claims, mint_token
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "e2e-acks-0123456789abcdef0123456789abcdef"
WEBHOOK_SECRET = "e2e-webhook-secret-0123456789"
CONTROL_EVENTS = {"connected", "history-lost", "closing", "heartbeat"}
_users = itertools.count(1)


def token(subject: str, **grants) -> str:
    return mint_token(build_claims(subject, **grants), SECRET)


PUBLISHER = {"Authorization": "Bearer " + token("publisher", service="orders",
                                                 publish=["user:*"])}


def new_user() -> str:
    return f"u{next(_users)}-{secrets.token_hex(3)}"


def is_message(frame) -> bool:
    return frame.dispatches and frame.event not in CONTROL_EVENTS


def publish(instance, user: str, n: int = 0, **metadata) -> str:
    response = instance.publish({
        "type": "info", "service": "orders", "target": {"user_id": user}, "data": {"n": n},
        "metadata": {"require_ack": True, **metadata}}, headers=PUBLISHER)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def stream(instance, user: str, last_event_id: str | None = None):
    client = instance.sse(f"/sse/user/{user}?token={token(user)}",
                          last_event_id=last_event_id)
    assert client.status == 200
    client.wait_for(lambda frame: frame.event == "connected")
    return client


def ack(instance, user: str, *ids: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token(user)}"}
    if len(ids) == 1:
        return instance.post(f"/api/v1/messages/{ids[0]}/ack", json={}, headers=headers)
    return instance.post("/api/v1/messages/ack", json={"ids": list(ids)}, headers=headers)


def status(instance, message_id: str) -> dict:
    response = instance.get(f"/api/v1/messages/{message_id}", headers=PUBLISHER)
    assert response.status_code == 200, response.text
    return response.json()


def copies(frames, message_id: str) -> list[dict]:
    """The deliveries of ``message_id`` among ``frames``, as the client parsed them."""
    return [frame.json() for frame in frames
            if is_message(frame) and frame.json()["id"] == message_id]


@pytest.fixture(scope="module")
def receiver():
    server = WebhookReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def cluster(service, receiver):
    env = {"ENABLE_AUTH": "true", "JWT_SECRET": SECRET, "ACK_WEBHOOK_URL": receiver.url,
           "ACK_WEBHOOK_SECRET": WEBHOOK_SECRET, "HEARTBEAT_INTERVAL": "5"}
    first = service(**env)
    second = service(redis_url=first.redis_url, **env)
    return first, second


def test_deliveries_are_counted_across_workers_and_instances(cluster):
    first, second = cluster
    user = new_user()
    streams = []
    try:
        # Streams until each instance has served them from both of its workers (or 6 each).
        for instance in (first, second):
            workers = set()
            while len(workers) < 2 and len([s for s in streams if s.url.startswith(
                    instance.base_url)]) < 6:
                opened = stream(instance, user)
                (greeting,) = [f for f in opened.received if f.event == "connected"]
                workers.add(greeting.json()["worker"])
                streams.append(opened)
        message_id = publish(first, user, priority="high")
        for opened in streams:
            (delivered,) = copies([opened.wait_for(is_message)], message_id)
            assert delivered["metadata"]["retry_count"] == 0
        wait_until(lambda: status(second, message_id)["written"] == len(streams), 10,
                   message=lambda: f"{len(streams)} writes counted: "
                                   f"{status(second, message_id)}")
        seen = status(first, message_id)
        assert seen["state"] == "delivered" and seen["priority"] == "high"
        assert seen["users"][0]["delivered_at"] is not None
    finally:
        for opened in streams:
            opened.close()

    assert ack(second, user, message_id).json()["status"] == "acknowledged"
    done = status(first, message_id)
    assert done["state"] == "acknowledged" and done["acknowledged_by"][0]["user"] == user
    metrics = first.get("/metrics").text
    assert "message_push_acknowledgements_total" in metrics


def test_an_acknowledgement_from_another_user_is_refused(cluster):
    first, second = cluster
    user, intruder = new_user(), new_user()
    message_id = publish(first, user)

    refused = ack(second, intruder, message_id)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ack_forbidden"
    in_batch = ack(first, intruder, message_id, "something-else")
    assert in_batch.status_code == 403 and in_batch.json()["error"]["details"]["ids"] == [
        message_id]
    assert status(first, message_id)["acknowledged_by"] == []


def test_an_offline_user_gets_the_message_on_connect_once_per_redelivery(cluster):
    first, second = cluster
    user = new_user()
    message_id = publish(first, user, n=1, ack_timeout=2)
    assert status(second, message_id)["state"] == "pending"

    with stream(second, user) as opened:
        # From the inbox at once (no Last-Event-ID needed), then again when its 2 s
        # to be acknowledged ran out: each time once, its retry count raised.
        frames = opened.collect(2, predicate=is_message, timeout=10)
        assert [m["metadata"]["retry_count"] for m in copies(frames, message_id)] == [1, 2]
        assert all(frame.id is None for frame in frames)  # the client's position stays
    with stream(first, user) as again:
        # Delivered just now: not again before its timeout. (The second redelivery may
        # still reach this new stream: a worker offers it to the streams it holds when
        # it handles the broadcast, which a loaded machine can delay past this connect.)
        def redelivered_again(frame) -> bool:
            return is_message(frame) and frame.json()["metadata"]["retry_count"] > 2

        again.assert_silent(1.0, redelivered_again)
        assert ack(first, user, message_id).status_code == 200
        again.assert_silent(3.0, redelivered_again)
    assert status(first, message_id)["redeliveries"] == 2


def test_an_acknowledged_message_is_never_delivered_again(cluster):
    first, second = cluster
    user = new_user()
    with stream(first, user) as live:
        before = live.last_event_id
        message_id = publish(first, user, n=1)
        assert copies([live.wait_for(is_message)], message_id)
        assert ack(first, user, message_id).status_code == 200

    def is_it(frame) -> bool:
        return is_message(frame) and frame.json()["id"] == message_id

    # A new connection, a resume from before it on the other instance, the same on this one.
    cases = ((first, None), (second, before), (first, before))
    for n, (instance, last_event_id) in enumerate(cases, 10):
        with stream(instance, user, last_event_id) as opened:
            plain = instance.publish({"type": "info", "service": "orders",
                                      "target": {"user_id": user}, "data": {"n": n}},
                                     headers=PUBLISHER)
            assert plain.status_code == 202
            opened.wait_for(lambda frame, n=n: is_message(frame) and frame.json()["data"] == {
                "n": n})  # what came before it: the replay, and the inbox
            opened.assert_silent(0.5, is_it)
            assert not [frame for frame in opened.received if is_it(frame)]


def test_an_unacknowledged_expiry_sends_one_signed_notice(cluster, receiver):
    first, _ = cluster
    user = new_user()
    acknowledged = publish(first, user, ttl=1)
    assert ack(first, user, acknowledged).status_code == 200
    expired = publish(first, user, n=7, ttl=1, priority="urgent")

    def notices_of(message_id: str):
        return [notice for notice in receiver.notices
                if notice.headers.get("Pushservice-Notice-Id") == message_id]

    wait_until(lambda: (status(first, expired)["webhook"] or {}).get("state") == "delivered",
               15, message="the notice to be taken")
    assert status(first, expired)["webhook"]["attempts"] == 1
    (received,) = notices_of(expired)
    notice = verify_webhook(received.body, received.headers, WEBHOOK_SECRET)
    assert notice["event"] == "message.expired_unacknowledged"
    assert (notice["id"], notice["service"], notice["unacknowledged"]) == (expired, "orders",
                                                                           [user])
    assert notice["message"]["data"] == {"n": 7}
    assert status(first, expired)["state"] == "expired_unacknowledged"
    # Four workers run the schedule by turns: still one notice a while later, and none
    # for the acknowledged message.
    assert status(first, acknowledged)["state"] == "acknowledged"
    gone = ack(first, user, expired)
    assert gone.status_code == 404 and gone.json()["error"]["details"]["reason"] == "expired"
    wait_until(lambda: status(first, acknowledged)["expired_at"] is None
               and status(first, expired)["expired_at"], 5)
    assert len(notices_of(expired)) == 1 and notices_of(acknowledged) == []


def test_hostile_acknowledgements_get_clear_answers(cluster):
    first, second = cluster
    user, other = new_user(), new_user()
    mine, theirs = publish(first, user), publish(first, other)
    auth = {"Authorization": f"Bearer {token(user)}"}

    def hit(n: int) -> tuple[int, str | None]:
        target = (mine, theirs, f"unknown-{n}")[n % 3]
        response = (first, second)[n % 2].post(f"/api/v1/messages/{target}/ack", json={},
                                               headers=auth)
        body = response.json()
        return response.status_code, body.get("status") or body["error"]["code"]

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = set(pool.map(hit, range(300)))
    assert answers == {(200, "acknowledged"), (200, "already_acknowledged"),
                       (403, "ack_forbidden"), (404, "message_not_found")}
    assert status(first, mine)["acknowledged_by"][0]["user"] == user
    assert status(first, theirs)["acknowledged_by"] == []

    cases = [
        (first.post("/api/v1/messages/ack", headers=auth,
                    json={"ids": [f"m{n}" for n in range(1001)]}), 413, "too_many_ids"),
        (first.post("/api/v1/messages/ack", headers={**auth, "Content-Type":
                                                     "application/json"},
                    data=json.dumps({"ids": ["x" * 120] * 3000})), 413, "payload_too_large"),
        (first.post("/api/v1/messages/ack", headers=auth, json={"ids": ["a b", mine]}), 400,
         "invalid_message_id"),
        (first.post("/api/v1/messages/ack", headers=auth, json={"ids": [7]}), 400,
         "invalid_message_id"),
        (first.post(f"/api/v1/messages/{'x' * 200}/ack", headers=auth, json={}), 400,
         "invalid_message_id"),
        (first.post(f"/api/v1/messages/{mine}/ack", headers=auth, data={"ids": mine}), 415,
         "unsupported_media_type"),
        (first.post(f"/api/v1/messages/{mine}/ack", json={}), 401, "missing_token"),
        (first.post("/api/v1/messages/ack", headers=auth, data="{nope",
                    ), 415, "unsupported_media_type"),
        (first.get(f"/api/v1/messages/{mine}", headers=auth), 403, "status_forbidden"),
    ]
    for response, code, error in cases:
        assert response.status_code == code, (response.status_code, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]["code"] == error
    assert first.get("/health").status_code == 200 and second.get("/health").status_code == 200


@pytest.mark.timeout(90)
def test_inboxes_and_acknowledgements_survive_a_redis_restart(service, make_redis_server):
    redis_server = make_redis_server(appendonly=True)
    instance = service(redis_url=redis_server.url(0), ENABLE_AUTH="true", JWT_SECRET=SECRET)
    user = new_user()
    waiting, acknowledged = publish(instance, user, n=1), publish(instance, user, n=2)
    assert ack(instance, user, acknowledged).status_code == 200

    redis_server.kill()  # a crash: only what AOF wrote is back
    redis_server.restart()
    wait_until(lambda: instance.get("/health").status_code == 200, 30,
               message="the service to reach Redis again")

    with stream(instance, user) as opened:
        frames = opened.collect(1, predicate=is_message, timeout=10)
        assert [m["id"] for m in copies(frames, waiting)] == [waiting]
        opened.assert_silent(1.0, is_message)
    assert status(instance, acknowledged)["state"] == "acknowledged"
    assert status(instance, waiting)["redeliveries"] == 1
