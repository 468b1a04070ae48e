"""The message envelope: building it, giving it an id, and what the service answers.

A message is a plain dict in the service's format (README, "The message"):
``type``, ``service``, ``target``, ``data``, ``metadata``, and optionally ``id``,
``source`` and ``timestamp``. Every message this client sends carries an ``id``: the
service deduplicates a publisher-chosen id per service within the message's TTL, so a
retry of a publish whose answer was lost is not delivered twice.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

MESSAGE_TYPES = ("progress", "status", "error", "success", "warning", "info", "custom")


@dataclass(frozen=True, slots=True)
class Published:
    """What the service answered for one accepted message (202).

    ``id`` is the message id, ``event_id`` its position in the stream (what subscribers
    see as the SSE ``id``), ``topics`` where it went (``["*"]`` for a broadcast),
    ``duplicate`` True when the service had already accepted a message with this id
    (then ``event_id`` is the first one's and nothing was delivered again).
    """

    id: str
    event_id: str
    topics: tuple[str, ...]
    duplicate: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Published:
        """From one result object of the service's answer."""
        return cls(id=str(body["id"]), event_id=str(body["event_id"]),
                   topics=tuple(body.get("topics") or ()),
                   duplicate=bool(body.get("duplicate", False)))

    def to_dict(self) -> dict[str, Any]:
        """The service's own JSON shape."""
        return {"id": self.id, "event_id": self.event_id, "topics": list(self.topics),
                "duplicate": self.duplicate}


class MessageIds:
    """Unique, ordered message ids: ``msg_<unix seconds>_<random>_<counter>``.

    The random part (fixed per process, renewed after a fork) keeps ids of different
    processes and hosts apart; the counter keeps one process's ids apart. Ids use only
    characters the service accepts in ids (letters, digits, ``_``).
    """

    def __init__(self) -> None:
        self._renew()
        # A forked worker must not repeat its parent's ids.
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        """A new id (thread-safe: ``itertools.count`` advances atomically)."""
        return f"msg_{int(time.time())}_{self._prefix}_{next(self._counter)}"


_ids = MessageIds()


def new_message_id() -> str:
    """A fresh message id from this process's generator."""
    return _ids.next()


def with_id(message: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``message`` that has an ``id`` (a new one unless it had one)."""
    if not isinstance(message, Mapping):
        raise TypeError(f"a message is a mapping (dict), not {type(message).__name__}")
    copy = dict(message)
    if not copy.get("id"):
        copy["id"] = new_message_id()
    return copy


def build_message(
    type: str,
    target: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None = None,
    *,
    service: str | None,
    metadata: Mapping[str, Any] | None = None,
    source: str | None = None,
    id: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The envelope for one message; only the fields given are included (the service
    assigns ``timestamp``, and ``id`` is added when sending).

    ``type`` must be one of MESSAGE_TYPES; ``service`` is required (ConfigurationError
    when None: pass it to the client or to the call, or set PUSHSERVICE_SERVICE).
    """
    if type not in MESSAGE_TYPES:
        raise ConfigurationError(
            f"unknown message type {type!r}: use one of {', '.join(MESSAGE_TYPES)}")
    if not service:
        raise ConfigurationError(
            "no service name: give service= to the client or the call, or set "
            "PUSHSERVICE_SERVICE")
    message: dict[str, Any] = {"type": type, "service": service}
    if id is not None:
        message["id"] = id
    if timestamp is not None:
        message["timestamp"] = timestamp
    if source is not None:
        message["source"] = source
    if target is not None:
        message["target"] = dict(target)
    message["data"] = dict(data or {})
    if metadata is not None:
        message["metadata"] = dict(metadata)
    return message


def helper_data(text: str | None, fields: Mapping[str, Any],
                extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``data`` of a typed helper: its own fields (those not None), ``message`` when
    text is given, then ``extra`` (which wins: it is the caller's explicit data)."""
    data = {name: value for name, value in fields.items() if value is not None}
    if text is not None:
        data["message"] = text
    if extra:
        data.update(extra)
    return data
