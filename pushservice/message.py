"""The message envelope: validation, defaults, and the topics derived from its target.

Routing: ``target.channel`` is a topic as is (a string or a list of strings),
``user_id`` becomes ``user:<id>`` and in general ``<name>_id`` becomes ``<name>:<value>``.
Every message is also on ``service:<service>``. A broadcast is on the single topic ``*``,
which every connection receives (engine/topics.py has the rule).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from .engine.topics import (
    BROADCAST_TOPIC,
    DEFAULT_MAX_NAME_LENGTH,
    SERVICE_PATTERN,
    SERVICE_SCHEMA,
    is_valid_name,
    keyed_topic,
    name_rule_text,
    name_schema,
    service_topic,
)
from .errors import PayloadTooLargeError, ValidationError

MESSAGE_TYPES = ("progress", "status", "error", "success", "warning", "info", "custom")
PRIORITIES = ("low", "normal", "high", "urgent")

_FIELDS = ("id", "timestamp", "type", "service", "source", "target", "data", "metadata")
_FIELD_SET = frozenset(_FIELDS)
_ABSENT = object()
DEFAULT_MAX_TOPICS = 100
# Validation stops listing problems after this many, so a hostile body cannot make the
# error response larger than itself.
MAX_PROBLEMS = 50
_TARGET_KEY_PATTERN = re.compile(r"([a-z][a-z0-9_]{0,31})_id")
_SOURCE_MAX = 128
# Characters a ``source`` may not hold (a regex character class, also in the schema).
_CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
_CONTROL = re.compile(f"[{_CONTROL_CHARACTERS}]")
_TIMESTAMP_MAX = 64
# The integers a stored message can carry (what orjson encodes: 64 bits).
_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1


class Rule(NamedTuple):
    """One constraint of the message in the two forms that must agree: the JSON Schema
    that the OpenAPI document shows (``schema``) and the validator's words when a value
    breaks it (``error``). Both are written once, in ``message_rules``."""

    schema: dict[str, Any]
    error: str


def message_rules(message_ttl: int, max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
                  max_topics: int = DEFAULT_MAX_TOPICS) -> dict[str, Rule]:
    """Every constraint of a message, by field path, for these limits (settings)."""
    name = name_rule_text(max_name_length)
    too_many = f"names more than {max_topics} topics (MAX_TOPICS_PER_MESSAGE)"
    return {
        "type": Rule({"type": "string", "enum": list(MESSAGE_TYPES)},
                     "must be one of " + ", ".join(MESSAGE_TYPES)),
        "service": Rule(dict(SERVICE_SCHEMA),
                        "must be 1-64 characters of letters, digits, '_', '-', '.'"),
        "id": Rule(name_schema(max_name_length),
                   f"must be 1-{max_name_length} characters of letters, digits, '_', '-', "
                   "'.', ':', '@'"),
        "timestamp": Rule({"type": "string", "format": "date-time",
                           "maxLength": _TIMESTAMP_MAX},
                          "must be an ISO 8601 date-time string"),
        "source": Rule({"type": ["string", "null"], "minLength": 1, "maxLength": _SOURCE_MAX,
                        "pattern": f"^[^{_CONTROL_CHARACTERS}]*$"},
                       f"must be a string of 1-{_SOURCE_MAX} printable characters"),
        "target": Rule({"type": "object", "maxProperties": max_topics},
                       "must be a JSON object"),
        "target.too_many": Rule({"maxProperties": max_topics}, too_many),
        "target.empty": Rule({"minProperties": 1}, "needs at least one routing key: "
                             "channel, user_id or <name>_id"),
        "target.channel": Rule(
            {"oneOf": [name_schema(max_name_length),
                       {"type": "array", "minItems": 1, "maxItems": max_topics,
                        "items": name_schema(max_name_length)}]},
            f"must be a channel name (or a list of them) of {name}"),
        "target.channel.empty": Rule({"minItems": 1}, "must name at least one channel"),
        # A key's value: a name, or an integer (its decimal digits are the name).
        "target.<name>_id": Rule(
            {"oneOf": [name_schema(max_name_length),
                       {"type": "integer", "minimum": _INT_MIN, "maximum": _UINT_MAX}]},
            f"must be {name}"),
        "target.<name>_id.type": Rule({"type": ["string", "integer"]},
                                      "must be a string or an integer"),
        "target.key": Rule({"pattern": f"^{_TARGET_KEY_PATTERN.pattern}$"},
                           "unknown target key: use 'channel' or '<name>_id'"),
        "data": Rule({"type": "object"}, "must be a JSON object"),
        "data.progress": Rule({"type": "number", "minimum": 0, "maximum": 100},
                              "must be a number from 0 to 100"),
        "metadata": Rule({"type": "object"}, "must be a JSON object"),
        "metadata.priority": Rule({"type": "string", "enum": list(PRIORITIES),
                                   "default": "normal"},
                                  "must be one of " + ", ".join(PRIORITIES)),
        "metadata.ttl": Rule({"type": "integer", "minimum": 1, "maximum": message_ttl,
                              "default": message_ttl},
                             f"must be an integer from 1 to {message_ttl} (MESSAGE_TTL)"),
        "metadata.retry_count": Rule({"type": "integer", "minimum": 0, "default": 0},
                                     "must be a non-negative integer"),
        # Delivery confirmation (docs/delivery-confirmation.md).
        "metadata.require_ack": Rule({"type": "boolean", "default": False},
                                     "must be true or false"),
        "metadata.ack_timeout": Rule({"type": "integer", "minimum": 1,
                                      "maximum": message_ttl},
                                     f"must be an integer from 1 to {message_ttl} (seconds), "
                                     "with require_ack: true"),
        # Each user a message is for acknowledges it: a broadcast has no one to.
        "target.ack_user": Rule({"required": ["user_id"]},
                                "require_ack needs target.user_id: the user who "
                                "acknowledges the message"),
    }


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
    # ``metadata.priority``; ``ack`` when the message asks to be acknowledged.
    priority: str = "normal"
    ack: AckRequest | None = None


class AckRequest(NamedTuple):
    """What a message that asks for acknowledgement (``metadata.require_ack``) needs:
    the ``users`` it is for (from its ``user:`` topics), who acknowledge it, and its own
    ``timeout_seconds`` (``metadata.ack_timeout``; None: ACK_TIMEOUT_SECONDS, scaled by
    priority)."""

    users: tuple[str, ...]
    timeout_seconds: int | None = None


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
        self.rules = rules = message_rules(message_ttl, max_name_length, max_topics)
        # The validator's words, taken from the rules the OpenAPI document shows.
        self._errors = {path: rule.error for path, rule in rules.items()}
        self._too_many_topics = self._errors["target.too_many"]
        self._ids = MessageIds()
        # Publishers repeat their service, channel and user names: each is matched
        # against its pattern once, then found in a set.
        self._is_service = _KnownValid(
            lambda value: isinstance(value, str) and SERVICE_PATTERN.fullmatch(value) is not None)
        self._is_name = _KnownValid(lambda value: is_valid_name(value, max_name_length))
        self._default_metadata = {"priority": "normal", "ttl": message_ttl, "retry_count": 0}

    def json_schema(self, broadcast: bool = False) -> dict[str, Any]:
        """JSON Schema of the messages ``check`` accepts (for ``send`` and ``batch``, or
        with ``broadcast`` for a broadcast, which needs no routing key), built from
        ``rules``: the OpenAPI document shows exactly what the validator enforces, except
        the limits no schema can state (distinct topics, the encoded size)."""
        rule = {path: dict(rule.schema) for path, rule in self.rules.items()}
        target = {**rule["target"], "properties": {"channel": rule["target.channel"]},
                  "patternProperties": {rule["target.key"]["pattern"]:
                                        rule["target.<name>_id"]},
                  "additionalProperties": False}
        if not broadcast:
            target.update(rule["target.empty"])
        # Every metadata rule (metadata.<key>) is a property; other keys are kept as sent.
        metadata = {**rule["metadata"], "properties": {
            path.split(".", 1)[1]: schema for path, schema in rule.items()
            if path.startswith("metadata.")}}
        nullable = {"type": ["string", "null"]}  # absent and null alike: assigned or none
        properties = {
            "id": {**rule["id"], **nullable}, "timestamp": {**rule["timestamp"], **nullable},
            "type": rule["type"], "service": rule["service"], "source": rule["source"],
            "target": target, "data": rule["data"], "metadata": metadata,
        }
        assert set(properties) == _FIELD_SET
        # metadata.ack_timeout only with require_ack: true, which needs the target's user.
        metadata["dependentSchemas"] = {"ack_timeout": {
            "properties": {"require_ack": {"const": True}}, "required": ["require_ack"]}}
        asks_ack = {"properties": {"metadata": {
            "properties": {"require_ack": {"const": True}}, "required": ["require_ack"]}},
            "required": ["metadata"]}
        return {
            "type": "object", "properties": properties,
            "required": ["type", "service"] if broadcast else ["type", "service", "target"],
            "additionalProperties": False,
            # A progress message's data.progress, when present, is a percentage.
            "if": {"properties": {"type": {"const": "progress"}}, "required": ["type"]},
            "then": {"properties": {"data": {"properties": {
                "progress": rule["data.progress"]}}}},
            "dependentSchemas": {"metadata": {
                "if": asks_ack,
                "then": False if broadcast else {
                    "properties": {"target": rule["target.ack_user"]},
                    "required": ["target"]}}},
        }

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

        errors = self._errors
        message_type = raw.get("type")
        if message_type is None:
            problems.add("type", "required")
        elif message_type not in MESSAGE_TYPES:
            problems.add("type", errors["type"])

        service = raw.get("service")
        if service is None:
            problems.add("service", "required")
        elif not self._is_service(service):
            problems.add("service", errors["service"])

        message_id = raw.get("id")
        client_id = message_id is not None
        if client_id and not is_valid_name(message_id, self.max_name_length):
            problems.add("id", errors["id"])

        timestamp = raw.get("timestamp")
        if timestamp is not None and not _is_timestamp(timestamp):
            problems.add("timestamp", errors["timestamp"])

        source = raw.get("source")
        if source is not None and (
            not isinstance(source, str) or not source or len(source) > _SOURCE_MAX
            or _CONTROL.search(source)
        ):
            problems.add("source", errors["source"])

        target = raw.get("target", {})
        topics = self._topics(target, problems, broadcast)

        data = raw.get("data", {})
        if not isinstance(data, dict):
            problems.add("data", errors["data"])
        elif message_type == "progress" and "progress" in data:
            progress = data["progress"]
            if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not (
                0 <= progress <= 100
            ):
                problems.add("data.progress", errors["data.progress"])

        metadata = raw.get("metadata", _ABSENT)
        # No metadata (most messages): the defaults, with nothing to check.
        metadata = (dict(self._default_metadata) if metadata is _ABSENT or metadata == {}
                    else self._metadata(metadata, problems))
        ack = None
        if metadata.get("require_ack") is True:
            ack = self._ack(metadata, target, broadcast, problems)
        if problems.items:
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
        # Stored with its topics beside it (the routing header): both count.
        size = len(body) + sum(map(len, topics)) + len(topics)
        if size > self.max_message_bytes:
            raise PayloadTooLargeError(
                f"The message is {size} bytes with its topics; the limit is "
                f"{self.max_message_bytes} (MAX_MESSAGE_BYTES).",
                details={"bytes": size, "limit": self.max_message_bytes},
                code="message_too_large",
            )
        ttl = metadata["ttl"]
        return Message(
            id=envelope["id"], type=message_type, service=service, topics=topics, body=body,
            ttl_seconds=ttl, expires_at_ms=int(now * 1000) + ttl * 1000, client_id=client_id,
            priority=metadata["priority"], ack=ack,
        )

    def _topics(self, target: Any, problems: Problems, broadcast: bool) -> tuple[str, ...]:
        errors = self._errors
        if not isinstance(target, dict):
            problems.add("target", errors["target"])
            return ()
        too_many = self._too_many_topics
        if len(target) > self.max_topics:
            problems.add("target", too_many)
            return ()
        is_name = self._is_name
        topics: list[str] = []
        for key, value in target.items():
            if key == "channel":
                channels = value if isinstance(value, list) else [value]
                if not channels:
                    problems.add("target.channel", errors["target.channel.empty"])
                if len(channels) > self.max_topics:
                    problems.add("target.channel", too_many)
                    continue
                for channel in channels:
                    if not is_name(channel):
                        problems.add("target.channel", errors["target.channel"])
                        break
                    topics.append(channel)
                continue
            kind = _target_kind(key)
            if kind is None:
                problems.add(f"target.{key}", errors["target.key"])
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                problems.add(f"target.{key}", errors["target.<name>_id.type"])
                continue
            text = value if isinstance(value, str) else str(value)
            if not is_name(text):
                problems.add(f"target.{key}", errors["target.<name>_id"])
                continue
            topics.append(keyed_topic(kind, text))
        if broadcast:
            return (BROADCAST_TOPIC,)
        if not topics and not any(p["field"].startswith("target") for p in problems.items):
            problems.add("target", errors["target.empty"])
        unique = tuple(dict.fromkeys(topics))
        if len(unique) > self.max_topics:
            problems.add("target", too_many)
        return unique

    def _metadata(self, metadata: Any, problems: Problems) -> dict[str, Any]:
        errors = self._errors
        if not isinstance(metadata, dict):
            problems.add("metadata", errors["metadata"])
            return {}
        result = {"priority": "normal", "ttl": self.message_ttl, "retry_count": 0}
        result.update(metadata)
        if result["priority"] not in PRIORITIES:
            problems.add("metadata.priority", errors["metadata.priority"])
        ttl = result["ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not (
            1 <= ttl <= self.message_ttl
        ):
            problems.add("metadata.ttl", errors["metadata.ttl"])
        retry_count = result["retry_count"]
        if isinstance(retry_count, bool) or not isinstance(retry_count, int) or retry_count < 0:
            problems.add("metadata.retry_count", errors["metadata.retry_count"])
        if "require_ack" in result and not isinstance(result["require_ack"], bool):
            problems.add("metadata.require_ack", errors["metadata.require_ack"])
        elif "ack_timeout" in result and result.get("require_ack") is not True:
            problems.add("metadata.ack_timeout", errors["metadata.ack_timeout"])
        return result

    def _ack(self, metadata: dict[str, Any], target: Any, broadcast: bool,
             problems: Problems) -> AckRequest | None:
        """The acknowledgement a message with ``require_ack: true`` asks for: its target's
        user acknowledges it (a broadcast, or a target without a user, has no one to)."""
        errors = self._errors
        timeout = metadata.get("ack_timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                    or not 1 <= timeout <= self.message_ttl):
            problems.add("metadata.ack_timeout", errors["metadata.ack_timeout"])
        user = target.get("user_id") if isinstance(target, dict) else None
        if broadcast or user is None:
            problems.add("target", errors["target.ack_user"])
            return None
        return AckRequest((str(user),), timeout)


class _KnownValid:
    """A validity check that remembers the strings it passed (at most ``limit``, all
    forgotten when full, so that no publisher can grow it)."""

    __slots__ = ("_check", "_limit", "_valid")

    def __init__(self, check: Callable[[Any], bool], limit: int = 4096) -> None:
        self._check = check
        self._limit = limit
        self._valid: set[str] = set()

    def __call__(self, value: Any) -> bool:
        valid = self._valid
        if isinstance(value, str) and value in valid:
            return True
        if not self._check(value):
            return False
        if len(valid) >= self._limit:
            valid.clear()
        valid.add(value)
        return True


@functools.lru_cache(maxsize=256)
def _target_kind(key: Any) -> str | None:
    """``user_id`` -> ``user``: the kind of topic a target key names; None when the key
    is not ``<name>_id``."""
    match = _TARGET_KEY_PATTERN.fullmatch(key) if isinstance(key, str) else None
    return None if match is None else match.group(1)


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
