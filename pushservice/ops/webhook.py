"""The expiry notice: a signed POST to ACK_WEBHOOK_URL when a message that asked for
acknowledgement expires unacknowledged.

The receiver checks, with the shared ACK_WEBHOOK_SECRET, the HMAC-SHA256 of
``<timestamp>.<body>`` (hex, in ``Pushservice-Signature: v1=<hex>``), and that the
``Pushservice-Timestamp`` (Unix seconds) is recent, so that a notice captured on the way
cannot be replayed later. Notices are sent at least once: a receiver that answers
anything but 2xx, or not in time, gets the notice again after a full-jitter backoff, up to
ACK_WEBHOOK_MAX_ATTEMPTS attempts; ``Pushservice-Notice-Id`` (the message id) lets it
ignore a repeat. docs/delivery-confirmation.md has the format, and pushservice_client
(clients/python) a function that checks a notice.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

from .. import __version__
from ..confirmation import iso_ms as _iso
from ..settings import Settings

EVENT = "message.expired_unacknowledged"
SIGNATURE_HEADER = "Pushservice-Signature"
TIMESTAMP_HEADER = "Pushservice-Timestamp"
NOTICE_ID_HEADER = "Pushservice-Notice-Id"
EVENT_HEADER = "Pushservice-Event"
# Full jitter: the n-th retry waits a random time up to min(cap, base * 2**n) seconds.
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 300.0


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``v1=`` and the hex HMAC-SHA256 of
    ``<timestamp>.<body>`` with ``secret``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def retry_delay_seconds(attempt: int) -> float:
    """How long to wait after the ``attempt``-th failure (from 1)."""
    return random.uniform(0, min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** attempt))


def notice_body(record: dict[str, str]) -> dict[str, Any]:
    """The notice for a delivery record (store/acks.py) of an expired message."""
    users = [user for user in record.get("users", "").split(",") if user]
    acknowledged = {user: _iso(record[f"acked:{user}"]) for user in users
                    if f"acked:{user}" in record}
    try:
        message = orjson.loads(record.get("body", "null"))
    except orjson.JSONDecodeError:
        message = None
    return {
        "event": EVENT,
        "id": record.get("id"),
        "service": record.get("service"),
        "event_id": record.get("event_id"),
        "type": record.get("type"),
        "priority": record.get("priority"),
        "topics": [topic for topic in record.get("topics", "").split(",") if topic],
        "users": users,
        "unacknowledged": [user for user in users if user not in acknowledged],
        "acknowledged": acknowledged,
        "created_at": _iso(record.get("created")),
        "expires_at": _iso(record.get("expires")),
        "expired_at": _iso(record.get("expired")),
        "written": int(record.get("written", 0)),
        "redeliveries": int(record.get("redeliveries", 0)),
        "attempt": int(record.get("webhook_attempts", 1)),
        "message": message,
    }


class WebhookError(Exception):
    """The receiver did not take the notice (no answer in time, or not 2xx)."""


class Webhook:
    """Sends notices to ACK_WEBHOOK_URL, signed with ACK_WEBHOOK_SECRET."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.ack_webhook_url
        self.secret = settings.ack_webhook_secret
        self.timeout = settings.ack_webhook_timeout_seconds

    def request(self, notice: dict[str, Any], now: float | None = None
                ) -> urllib.request.Request:
        """The signed request for ``notice``."""
        body = orjson.dumps(notice)
        timestamp = int(time.time() if now is None else now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"pushservice/{__version__}",
            EVENT_HEADER: EVENT,
            NOTICE_ID_HEADER: str(notice.get("id")),
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
        }
        return urllib.request.Request(self.url, data=body, method="POST", headers=headers)

    def send(self, notice: dict[str, Any]) -> None:
        """POST ``notice``; WebhookError unless the receiver answered 2xx in time."""
        try:
            with urllib.request.urlopen(self.request(notice), timeout=self.timeout) as answer:
                answer.read(65536)
        except urllib.error.HTTPError as exc:
            raise WebhookError(f"HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise WebhookError(str(exc) or type(exc).__name__) from exc
