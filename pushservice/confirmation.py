"""What delivery confirmation means for each priority: how long a user has to acknowledge
a message before it is delivered again, and how often it is.

Pure rules, no I/O: the store writes them into each message's delivery record when it is
published, and the documentation's table is this module's (docs/delivery-confirmation.md).

| priority | acknowledgement timeout | redeliveries per user |
|---|---|---|
| urgent | ACK_TIMEOUT_SECONDS / 4 | 2 x ACK_MAX_REDELIVERIES |
| high   | ACK_TIMEOUT_SECONDS / 2 | 2 x ACK_MAX_REDELIVERIES |
| normal | ACK_TIMEOUT_SECONDS     | ACK_MAX_REDELIVERIES |
| low    | 2 x ACK_TIMEOUT_SECONDS | ACK_MAX_REDELIVERIES / 2 (at least 1) |

A message's own ``metadata.ack_timeout`` replaces the timeout whatever its priority.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .settings import Settings

# Priorities in order, lowest first: an overflowing inbox gives up the lowest first.
PRIORITY_RANK = {"low": 0, "normal": 1, "high": 2, "urgent": 3}
_TIMEOUT_FACTOR = {"low": 2.0, "normal": 1.0, "high": 0.5, "urgent": 0.25}
_REDELIVERY_FACTOR = {"low": 0.5, "normal": 1.0, "high": 2.0, "urgent": 2.0}


class AckPolicy:
    """The confirmation rules of one deployment (ACK_TIMEOUT_SECONDS,
    ACK_MAX_REDELIVERIES)."""

    def __init__(self, timeout_seconds: float, max_redeliveries: int) -> None:
        self.timeout_seconds = timeout_seconds
        self.max_redeliveries_setting = max_redeliveries

    @classmethod
    def from_settings(cls, settings: Settings) -> AckPolicy:
        return cls(settings.ack_timeout_seconds, settings.ack_max_redeliveries)

    def timeout_ms(self, priority: str, own_seconds: int | None = None) -> int:
        """Milliseconds a user has to acknowledge: the message's own timeout, else the
        setting scaled by priority (never under one second)."""
        if own_seconds is not None:
            return own_seconds * 1000
        return max(1000, int(self.timeout_seconds * _TIMEOUT_FACTOR[priority] * 1000))

    def max_redeliveries(self, priority: str) -> int:
        """How many times a message is delivered again to each user at most (0: never,
        and it has no place in the offline inbox)."""
        base = self.max_redeliveries_setting
        if base == 0:
            return 0
        return max(1, int(base * _REDELIVERY_FACTOR[priority]))


STATES = ("pending", "delivered", "acknowledged", "expired_unacknowledged")


def iso_ms(ms: str | int | None) -> str | None:
    """Unix milliseconds as ``2025-07-30T15:10:00.123Z`` (None stays None)."""
    if ms is None or ms == "":
        return None
    moment = datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def delivery_status(record: dict[str, str], now_ms: int) -> dict[str, Any]:
    """What a publisher sees of a message's delivery record (store/acks.py).

    ``state``: ``acknowledged`` (every user it is for acknowledged it),
    ``expired_unacknowledged`` (its TTL ran out first), ``delivered`` (written to at
    least one connection, waiting for acknowledgement) or ``pending`` (not written to
    any connection yet: its users have no stream open)."""
    users = [user for user in record.get("users", "").split(",") if user]
    written = int(record.get("written", 0))
    expires = int(record.get("expires", 0))
    acknowledged = [user for user in users if f"acked:{user}" in record]
    if users and len(acknowledged) == len(users):
        state = "acknowledged"
    elif "expired" in record or expires < now_ms:
        state = "expired_unacknowledged"
    elif written > 0:
        state = "delivered"
    else:
        state = "pending"
    per_user = []
    for user in users:
        acked = record.get(f"acked:{user}")
        due = record.get(f"due:{user}")
        retries = int(record.get(f"retries:{user}", 0))
        waiting = state in ("pending", "delivered") and acked is None
        per_user.append({
            "user": user,
            "delivered_at": iso_ms(record.get(f"delivered:{user}")),
            "acknowledged_at": iso_ms(acked),
            "redeliveries": retries,
            "next_redelivery_at": iso_ms(due) if waiting and due and (
                int(due) < expires and retries < int(record.get("max", 0))) else None,
            "dropped_from_inbox_at": iso_ms(record.get(f"dropped:{user}")),
        })
    webhook = None
    if "webhook" in record:
        webhook = {"state": record["webhook"],
                   "attempts": int(record.get("webhook_attempts", 0)),
                   "at": iso_ms(record.get("webhook_at"))}
    return {
        "id": record.get("id"),
        "service": record.get("service"),
        "event_id": record.get("event_id"),
        "type": record.get("type"),
        "priority": record.get("priority"),
        "topics": [topic for topic in record.get("topics", "").split(",") if topic],
        "state": state,
        "created_at": iso_ms(record.get("created")),
        "expires_at": iso_ms(expires),
        "expired_at": iso_ms(record.get("expired")),
        "written": written,
        "redeliveries": int(record.get("redeliveries", 0)),
        "ack_timeout_seconds": int(record.get("timeout", 0)) / 1000,
        "max_redeliveries": int(record.get("max", 0)),
        "acknowledged_by": [{"user": user, "at": iso_ms(record[f"acked:{user}"])}
                            for user in acknowledged],
        "users": per_user,
        "webhook": webhook,
    }
