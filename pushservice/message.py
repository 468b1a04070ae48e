"""The message envelope: validation, defaults, and the topics derived from its target.

Routing: ``target.channel`` is a topic as is (a string or a list of strings),
``user_id`` becomes ``user:<id>`` and in general ``<name>_id`` becomes ``<name>:<value>``.
Every message is also on ``service:<service>``. A broadcast is on the single topic ``*``,
which every connection receives (engine/topics.py has the rule).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from .engine.topics import (
    BROADCAST_TOPIC,
    DEFAULT_MAX_NAME_LENGTH,
    SERVICE_PATTERN,
    is_valid_name,
    keyed_topic,
    service_topic,
)
from .errors import PayloadTooLargeError, ValidationError

MESSAGE_TYPES = ("progress", "status", "error", "success", "warning", "info", "custom")
PRIORITIES = ("low", "normal", "high", "urgent")

_FIELDS = ("id", "timestamp", "type", "service", "source", "target", "data", "metadata")
_FIELD_SET = frozenset(_FIELDS)
DEFAULT_MAX_TOPICS = 100
# Validation stops listing problems after this many, so a hostile body cannot make the
# error response larger than itself.
MAX_PROBLEMS = 50
_TARGET_KEY_PATTERN = re.compile(r"([a-z][a-z0-9_]{0,31})_id")
_SOURCE_MAX = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class Message(NamedTuple):
    """A validated message, ready to store.

    ``body`` is the complete message as one line of UTF-8 JSON. ``topics`` are what
    routing matches on. ``expires_at_ms`` is when the message stops being replayable
    (Unix milliseconds). ``client_id`` is True when the publisher chose the id, which
    makes a repeat of that id within the TTL a duplicate.
    """

    id: str
    type: str
    service: str
    topics: tuple[str, ...]
    body: bytes
    ttl_seconds: int
    expires_at_ms: int
    client_id: bool


class Problems:
    """Collects field-level validation problems as ``{"field", "error"}`` records."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, error: str) -> None:
        """Record a problem; beyond MAX_PROBLEMS, one last item says there are more."""
        if len(self.items) < MAX_PROBLEMS:
            self.items.append({"field": field, "error": error})
        elif len(self.items) == MAX_PROBLEMS:
            self.items.append({"field": "", "error": "more problems not listed"})

    def __bool__(self) -> bool:
        return bool(self.items)


class MessageFactory:
    """Validates raw JSON objects into Messages, filling id, timestamp and metadata.

    ``message_ttl`` is the longest a message is kept (seconds) and the default
    ``metadata.ttl``; ``max_message_bytes`` bounds the encoded message;
    ``max_name_length`` bounds target values and message ids; ``max_topics`` bounds the
    distinct topics a target names.
    """

    def __init__(self, message_ttl: int, max_message_bytes: int,
                 max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
                 max_topics: int = DEFAULT_MAX_TOPICS) -> None:
        self.message_ttl = message_ttl
        self.max_message_bytes = max_message_bytes
        self.max_name_length = max_name_length
        self.max_topics = max_topics
        self._too_many_topics = f"names more than {max_topics} topics (MAX_TOPICS_PER_MESSAGE)"
        self._ids = MessageIds()

    def build(self, raw: Any, broadcast: bool = False, now: float | None = None) -> Message:
        """Validate one message; raise ValidationError (400) or PayloadTooLargeError (413)."""
        problems = Problems()
        message = self.check(raw, problems, broadcast, now)
        if problems:
            raise ValidationError("The message is invalid.", details=problems.items)
        assert message is not None
        return message

    def check(self, raw: Any, problems: Problems, broadcast: bool = False,
              now: float | None = None) -> Message | None:
        """Validate one message, recording problems instead of raising for 400s."""
        if not isinstance(raw, dict):
            problems.add("", "a message must be a JSON object")
            return None
        if not _FIELD_SET.issuperset(raw):
            for key in raw:
                if key not in _FIELD_SET:
                    problems.add(key, "unknown field")

        message_type = raw.get("type")
        if message_type is None:
            problems.add("type", "required")
        elif message_type not in MESSAGE_TYPES:
            problems.add("type", "must be one of " + ", ".join(MESSAGE_TYPES))

        service = raw.get("service")
        if service is None:
            problems.add("service", "required")
        elif not isinstance(service, str) or not SERVICE_PATTERN.fullmatch(service):
            problems.add("service", "must be 1-64 characters of letters, digits, '_', '-', '.'")

        message_id = raw.get("id")
        client_id = message_id is not None
        if client_id and not is_valid_name(message_id, self.max_name_length):
            problems.add("id", f"must be 1-{self.max_name_length} characters of letters, "
                         "digits, '_', '-', '.', ':', '@'")

        timestamp = raw.get("timestamp")
        if timestamp is not None and not _is_timestamp(timestamp):
            problems.add("timestamp", "must be an ISO 8601 date-time string")

        source = raw.get("source")
        if source is not None and (
            not isinstance(source, str) or not source or len(source) > _SOURCE_MAX
            or _CONTROL.search(source)
        ):
            problems.add("source", f"must be a string of 1-{_SOURCE_MAX} printable characters")

        target = raw.get("target", {})
        topics = self._topics(target, problems, broadcast)

        data = raw.get("data", {})
        if not isinstance(data, dict):
            problems.add("data", "must be a JSON object")
        elif message_type == "progress" and "progress" in data:
            progress = data["progress"]
            if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not (
                0 <= progress <= 100
            ):
                problems.add("data.progress", "must be a number from 0 to 100")

        metadata = self._metadata(raw.get("metadata", {}), problems)
        if problems:
            return None

        now = time.time() if now is None else now
        if not broadcast:
            topics = tuple(dict.fromkeys(topics + (service_topic(service),)))
        envelope = {
            "id": message_id if client_id else self._ids.next(now),
            "timestamp": timestamp if timestamp is not None else _iso_now(now),
            "type": message_type,
            "service": service,
            "source": source,
            "target": target,
            "data": data,
            "metadata": metadata,
        }
        try:
            body = orjson.dumps(envelope)
        except orjson.JSONEncodeError as exc:  # e.g. integers beyond 64 bits
            problems.add("", f"cannot be encoded as JSON: {exc}")
            return None
        if len(body) > self.max_message_bytes:
            raise PayloadTooLargeError(
                f"The message is {len(body)} bytes; the limit is {self.max_message_bytes}.",
                details={"bytes": len(body), "limit": self.max_message_bytes},
                code="message_too_large",
            )
        ttl = metadata["ttl"]
        return Message(
            id=envelope["id"], type=message_type, service=service, topics=topics, body=body,
            ttl_seconds=ttl, expires_at_ms=int(now * 1000) + ttl * 1000, client_id=client_id,
        )

    def _topics(self, target: Any, problems: Problems, broadcast: bool) -> tuple[str, ...]:
        if not isinstance(target, dict):
            problems.add("target", "must be a JSON object")
            return ()
        too_many = self._too_many_topics
        if len(target) > self.max_topics:
            problems.add("target", too_many)
            return ()
        longest = self.max_name_length
        topics: list[str] = []
        for key, value in target.items():
            where = f"target.{key}"
            if key == "channel":
                channels = value if isinstance(value, list) else [value]
                if not channels:
                    problems.add(where, "must name at least one channel")
                if len(channels) > self.max_topics:
                    problems.add(where, too_many)
                    continue
                for channel in channels:
                    if not is_valid_name(channel, longest):
                        problems.add(where, "must be a channel name (or a list of them) of "
                                     f"1-{longest} letters, digits, '_', '-', '.', ':', '@'")
                        break
                    topics.append(channel)
                continue
            match = _TARGET_KEY_PATTERN.fullmatch(key) if isinstance(key, str) else None
            if match is None:
                problems.add(where, "unknown target key: use 'channel' or '<name>_id'")
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                problems.add(where, "must be a string or an integer")
                continue
            text = str(value)
            if not is_valid_name(text, longest):
                problems.add(where, f"must be 1-{longest} letters, digits, '_', '-', '.', ':', '@'")
                continue
            topics.append(keyed_topic(match.group(1), text))
        if broadcast:
            return (BROADCAST_TOPIC,)
        if not topics and not any(p["field"].startswith("target") for p in problems.items):
            problems.add("target", "needs at least one routing key: channel, user_id or <name>_id")
        unique = tuple(dict.fromkeys(topics))
        if len(unique) > self.max_topics:
            problems.add("target", too_many)
        return unique

    def _metadata(self, metadata: Any, problems: Problems) -> dict[str, Any]:
        if not isinstance(metadata, dict):
            problems.add("metadata", "must be a JSON object")
            return {}
        result = {"priority": "normal", "ttl": self.message_ttl, "retry_count": 0}
        result.update(metadata)
        if result["priority"] not in PRIORITIES:
            problems.add("metadata.priority", "must be one of " + ", ".join(PRIORITIES))
        ttl = result["ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not (
            1 <= ttl <= self.message_ttl
        ):
            problems.add("metadata.ttl", f"must be an integer from 1 to {self.message_ttl} "
                         "(MESSAGE_TTL)")
        retry_count = result["retry_count"]
        if isinstance(retry_count, bool) or not isinstance(retry_count, int) or retry_count < 0:
            problems.add("metadata.retry_count", "must be a non-negative integer")
        return result


class MessageIds:
    """Service-assigned message ids: ``msg_<unix seconds>_<process tag><sequence>``.

    The random process tag keeps ids unique across workers and instances; it is renewed
    after a fork so that two workers never share it.
    """

    def __init__(self) -> None:
        self._renew()
        # A child process must not continue its parent's sequence under the same tag.
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._tag = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._prefix = (-1, "")

    def next(self, now: float) -> str:
        second = int(now)
        if self._prefix[0] != second:
            self._prefix = (second, f"msg_{second}_{self._tag}")
        return f"{self._prefix[1]}{next(self._counter):06d}"


_second_cache: tuple[int, str] = (-1, "")
_last_iso: tuple[float, str] = (-1.0, "")


def _iso_now(now: float) -> str:
    """``2025-07-30T15:10:00.123Z`` for ``now`` (Unix seconds), UTC."""
    global _second_cache, _last_iso
    if _last_iso[0] == now:
        return _last_iso[1]  # the messages of one batch share their ``now``
    # Microseconds rounded as datetime rounds them, then milliseconds truncated.
    fraction, whole = math.modf(now)
    second, microsecond = int(whole), round(fraction * 1_000_000)
    if microsecond >= 1_000_000:
        second, microsecond = second + 1, microsecond - 1_000_000
    cached_second, prefix = _second_cache
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_cache = (second, prefix)
    text = f"{prefix}.{microsecond // 1000:03d}Z"
    _last_iso = (now, text)
    return text


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def printable(text: str | None, limit: int = 200) -> str | None:
    """Client-given ``text`` without control characters, short enough to echo back or
    record."""
    if text is None:
        return None
    return "".join(ch for ch in text[:limit] if ch.isprintable())
