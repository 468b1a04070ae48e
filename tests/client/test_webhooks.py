"""pushservice_client.verify_webhook: a receiver of the service's expiry notices accepts
exactly the genuine, recent ones. The notices here are signed by the service's own code
(pushservice.ops.webhook), as it sends them."""

from __future__ import annotations

import pytest
from pushservice_client import WebhookVerificationError, verify_webhook, webhook_signature

from pushservice.ops.webhook import Webhook
from pushservice.settings import Settings

SECRET = "0123456789abcdef-shared-with-the-receiver"
NOW = 1_800_000_000


def signed(notice: dict, secret: str = SECRET, now: float = NOW) -> tuple[bytes, dict]:
    settings = Settings(ack_webhook_url="http://127.0.0.1:9/notices", ack_webhook_secret=secret)
    request = Webhook(settings).request(notice, now=now)
    return request.data, dict(request.header_items())


def test_a_genuine_notice_is_returned():
    body, headers = signed({"event": "message.expired_unacknowledged", "id": "m1"})

    assert verify_webhook(body, headers, SECRET, now=NOW + 5)["id"] == "m1"
    # Header names in any case, as frameworks hand them over.
    lower = {name.lower(): value for name, value in headers.items()}
    assert verify_webhook(body, lower, SECRET.encode(), now=NOW)["id"] == "m1"


@pytest.mark.parametrize("tamper, why", [
    (lambda body, headers: (body.replace(b"m1", b"m2"), headers), "signature"),
    (lambda body, headers: (body, {**headers, "Pushservice-signature": "v1=00"}), "signature"),
    (lambda body, headers: (body, {**headers, "Pushservice-timestamp": str(NOW + 1)}),
     "signature"),
    (lambda body, headers: (body, {k: v for k, v in headers.items()
                                   if k.lower() != "pushservice-timestamp"}), "Timestamp"),
])
def test_a_tampered_notice_is_refused(tamper, why):
    body, headers = tamper(*signed({"id": "m1"}))

    with pytest.raises(WebhookVerificationError, match=why):
        verify_webhook(body, headers, SECRET, now=NOW)


def test_another_secret_does_not_verify():
    body, headers = signed({"id": "m1"}, secret="someone-else-entirely-0123456789")

    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, SECRET, now=NOW)


def test_an_old_notice_cannot_be_replayed():
    body, headers = signed({"id": "m1"}, now=NOW - 301)

    with pytest.raises(WebhookVerificationError, match="s from now"):
        verify_webhook(body, headers, SECRET, now=NOW)
    assert verify_webhook(body, headers, SECRET, now=NOW, tolerance_seconds=600)["id"] == "m1"


def test_the_signature_can_be_computed_by_hand():
    body = b'{"id":"m1"}'

    assert webhook_signature(SECRET, NOW, body) == webhook_signature(SECRET.encode(),
                                                                     str(NOW), body)
    headers = {"Pushservice-Timestamp": str(NOW),
               "Pushservice-Signature": "v1=old, " + webhook_signature(SECRET, NOW, body)}
    assert verify_webhook(body, headers, SECRET, now=NOW) == {"id": "m1"}
