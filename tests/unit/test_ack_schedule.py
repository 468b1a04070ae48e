"""The confirmation schedules (ops/ack_schedule.py) and expiry notices (ops/webhook.py):
one worker of the deployment runs them; redeliveries reach the workers over the control
channel; a notice is signed, retried with backoff, and sent by one worker at a time. The
notice receiver is a real HTTP server on loopback."""

from __future__ import annotations

import time

import pytest
from pushservice_client import verify_webhook

from pushservice.engine.stats import WorkerStats
from pushservice.message import MessageFactory
from pushservice.ops import webhook
from pushservice.ops.ack_schedule import AckSchedule
from pushservice.store import DeploymentRecords
from pushservice.store.acks import AckStore
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "a-webhook-secret-of-enough-bytes"
FACTORY = MessageFactory(message_ttl=3600, max_message_bytes=65536)


@pytest.fixture
def receiver():
    server = WebhookReceiver(statuses=[500, 200])
    yield server
    server.close()


class Sent(list):
    def send(self, command: dict) -> int:
        self.append(command)
        return 1


def make_schedule(store, settings, control=None) -> AckSchedule:
    return AckSchedule(settings, AckStore(settings, store.connections, store.keys),
                       DeploymentRecords(store.connections, store.keys),
                       Sent() if control is None else control, WorkerStats())


def publish(store, **metadata):
    (published,) = store.publish([FACTORY.build({
        "type": "warning", "service": "svc", "target": {"user_id": "u1"},
        "metadata": {"require_ack": True, **metadata}})])
    return published


def test_one_worker_of_the_deployment_runs_the_schedules(store, settings, monkeypatch):
    first = make_schedule(store, settings.replace(instance_name="push-1"))
    second = make_schedule(store, settings.replace(instance_name="push-2"))
    ran = []
    monkeypatch.setattr(AckSchedule, "run_once", lambda self: ran.append(self))

    first._round()
    second._round()
    assert (first.leading, second.leading) == (True, False)
    assert ran == [first]
    first.stop()  # resigns: the other takes over at its next round
    second._round()
    assert second.leading is True and ran == [first, second]


def test_due_redeliveries_go_to_every_worker_with_the_retry_count_raised(store, settings):
    control = Sent()
    schedule = make_schedule(store, settings, control)
    published = publish(store, ack_timeout=1)
    now = int(time.time() * 1000)
    schedule.store.record_writes({(published.message.id, "u1"): 1}, now)
    store.client.zadd(store.keys.user("u1"), {"c1": now + 60_000})

    schedule.run_once(now + 1500)
    (command,) = control
    assert command["op"] == "redeliver"
    (item,) = command["items"]
    assert (item["user"], item["id"], item["event_id"]) == (
        "u1", published.message.id, published.event_id)
    assert '"retry_count":1' in item["body"]


def test_an_unacknowledged_expiry_is_noticed_signed_and_retried(store, settings, receiver,
                                                                 monkeypatch):
    monkeypatch.setattr(webhook, "RETRY_BASE_SECONDS", 0.05)
    chosen = settings.replace(ack_webhook_url=receiver.url, ack_webhook_secret=SECRET)
    schedule = make_schedule(store, chosen)
    published = publish(store, ttl=1)
    expired_at = int(time.time() * 1000) + 1500

    schedule.run_once(expired_at)
    assert schedule.stats.expired_unacknowledged == 1

    def delivered() -> bool:
        schedule.run_once(int(time.time() * 1000) + 1500)
        return schedule.stats.webhook_delivered == 1

    wait_until(delivered, 10, message="the notice to be taken")
    assert schedule.stats.webhook_retried == 1
    first, second = receiver.notices
    assert first.body != second.body  # the attempt number changed
    notice = verify_webhook(second.body, second.headers, SECRET)
    assert notice["event"] == "message.expired_unacknowledged"
    assert notice["id"] == published.message.id and notice["attempt"] == 2
    assert notice["unacknowledged"] == ["u1"] and notice["message"]["type"] == "warning"
    assert second.headers["Pushservice-Notice-Id"] == published.message.id
    # Taken: never sent again.
    schedule.run_once(int(time.time() * 1000) + 10**7)
    schedule._senders.join(timeout=5)
    assert len(receiver.notices) == 2


def test_a_notice_that_is_never_taken_is_given_up_after_its_attempts(store, settings,
                                                                     monkeypatch):
    monkeypatch.setattr(webhook, "RETRY_BASE_SECONDS", 0.01)
    refusing = WebhookReceiver(statuses=[503])
    try:
        chosen = settings.replace(ack_webhook_url=refusing.url, ack_webhook_secret=SECRET,
                                  ack_webhook_max_attempts=3)
        schedule = make_schedule(store, chosen)
        publish(store, ttl=1)

        def given_up() -> bool:
            schedule.run_once(int(time.time() * 1000) + 1500)
            return schedule.stats.webhook_failed == 1

        wait_until(given_up, 10, message="the notice to be given up")
        assert len(refusing.notices) == 3 and schedule.stats.webhook_retried == 2
    finally:
        refusing.close()


def test_the_signature_is_over_the_timestamp_and_the_body():
    signed = webhook.Webhook(type("S", (), {"ack_webhook_url": "http://127.0.0.1:9/x",
                                            "ack_webhook_secret": SECRET,
                                            "ack_webhook_timeout_seconds": 1})())
    request = signed.request({"id": "m1"}, now=1_800_000_000)
    headers = dict(request.header_items())
    assert headers["Pushservice-timestamp"] == "1800000000"
    assert headers["Pushservice-signature"] == webhook.sign(SECRET, 1_800_000_000,
                                                            request.data)
    assert verify_webhook(request.data, headers, SECRET, now=1_800_000_010) == {"id": "m1"}
