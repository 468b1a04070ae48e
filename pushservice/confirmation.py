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
