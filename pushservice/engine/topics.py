"""Topic names and the routing rule: which connections a message reaches.

A message carries topics (derived from its target, see message.py); a connection
subscribes to topics. The rule, in one place for live routing and for replay alike: a
message reaches a connection when any of its topics is one the connection subscribes
to, or when it is a broadcast (the topic ``*``), and it reaches it once however many of
its topics match.

Topic names are ``<channel>`` or ``<kind>:<value>`` (``user:123``, ``session:s1``,
``service:knowledge-service``), built from names that hold no separators, control or glob
characters.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any, TypeVar

BROADCAST_TOPIC = "*"
DEFAULT_MAX_NAME_LENGTH = 128
# Names that end up in topics, SSE fields, headers and logs: no separators, no control
# characters, no glob characters; ',' separates channels in URLs and in stored topics.
_NAME_CHARACTERS = re.compile(r"[A-Za-z0-9_.:@-]+")
# A service name, and any other plain name: 1-64 letters, digits, '_', '-' or '.'.
SERVICE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

S = TypeVar("S")


def name_schema(max_length: int = DEFAULT_MAX_NAME_LENGTH) -> dict[str, Any]:
    """JSON Schema of the strings ``is_valid_name`` accepts (for the OpenAPI document)."""
    return {"type": "string", "minLength": 1, "maxLength": max_length,
            "pattern": f"^{_NAME_CHARACTERS.pattern}$"}


def name_rule_text(max_length: int = DEFAULT_MAX_NAME_LENGTH) -> str:
    """What ``is_valid_name`` accepts, in the words error messages use."""
    return f"1-{max_length} letters, digits, '_', '-', '.', ':', '@'"


SERVICE_SCHEMA = {"type": "string", "pattern": f"^{SERVICE_PATTERN.pattern}$"}


def is_valid_name(value: Any, max_length: int = DEFAULT_MAX_NAME_LENGTH) -> bool:
    """True when ``value`` may be used as a channel, user, session or topic value: a
    string of 1 to ``max_length`` letters, digits, ``_ - . : @`` (nothing that could end a
    header, a log line or an SSE field, separate channels or act as a glob)."""
    return (isinstance(value, str) and 0 < len(value) <= max_length
            and _NAME_CHARACTERS.fullmatch(value) is not None)


def keyed_topic(kind: str, value: str) -> str:
    """``user``, ``123`` -> ``user:123``; the topic of a ``<kind>_id`` target key."""
    return f"{kind}:{value}"


def user_topic(user_id: str) -> str:
    return keyed_topic("user", user_id)


def service_topic(service: str) -> str:
    """Every message a service publishes is on this topic too."""
    return keyed_topic("service", service)


def matches(message_topics: Collection[str], subscribed: frozenset[str]) -> bool:
    """Whether a message on ``message_topics`` reaches a connection of ``subscribed``."""
    return BROADCAST_TOPIC in message_topics or not subscribed.isdisjoint(message_topics)


class TopicIndex:
    """Subscribers by topic, answering the routing rule for many subscribers at once.

    A subscriber is anything with an ``id``; ``by_id`` maps ids to subscribers.
    ``reaching(topics)`` gives every subscriber a message on ``topics`` reaches, each
    once: all of them for a broadcast. It returns the index's own collections (no copy)
    when it can, so callers must not change the index while they use the answer.
    """

    __slots__ = ("_by_topic", "by_id")

    def __init__(self) -> None:
        self._by_topic: dict[str, set[S]] = {}
        self.by_id: dict[str, S] = {}

    def add(self, subscriber: S, topics: Iterable[str]) -> None:
        self.by_id[subscriber.id] = subscriber
        for topic in topics:
            self._by_topic.setdefault(topic, set()).add(subscriber)

    def remove(self, subscriber: S, topics: Iterable[str]) -> bool:
        """Forget ``subscriber``; False when it was not there."""
        if self.by_id.pop(subscriber.id, None) is None:
            return False
        for topic in topics:
            group = self._by_topic.get(topic)
            if group is not None:
                group.discard(subscriber)
                if not group:
                    del self._by_topic[topic]
        return True

    def reaching(self, topics: Collection[str]) -> Collection[S]:
        if BROADCAST_TOPIC in topics:
            return self.by_id.values()
        by_topic = self._by_topic
        groups = [group for topic in topics if (group := by_topic.get(topic))]
        if not groups:
            return ()
        return groups[0] if len(groups) == 1 else set().union(*groups)

    def __len__(self) -> int:
        return len(self.by_id)
