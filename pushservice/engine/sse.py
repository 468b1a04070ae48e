"""Encoding of Server-Sent Events frames. No I/O.

A frame is ``id:``/``event:``/``data:`` lines ended by a blank line. ``id`` and ``event``
must not contain CR, LF or NUL (they would end the field early or be ignored by
browsers); ``data`` is split on line breaks so that no value can inject a field.
"""

from __future__ import annotations

import re

import orjson

_FIELD_BREAKERS = re.compile(r"[\r\n\x00]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class FrameError(ValueError):
    """A value cannot be placed in an SSE field without changing the frame."""


def _field(name: str, value: str) -> str:
    if _FIELD_BREAKERS.search(value):
        raise FrameError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")
    return f"{name}: {value}\n"


def encode_frame(data: str | bytes, event: str | None = None,
                 event_id: str | None = None, retry_ms: int | None = None) -> bytes:
    """One SSE frame. ``data`` may span lines; each becomes its own ``data:`` line.
    ``retry_ms`` adds a reconnect delay to the same frame."""
    head = "" if retry_ms is None else f"retry: {int(retry_ms)}\n"
    if event_id is not None:
        head += _field("id", event_id)
    if event is not None:
        head += _field("event", event)
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    lines = _LINE_BREAK.split(data)
    body = "".join(f"data: {line}\n" for line in lines)
    return (head + body + "\n").encode("utf-8")


def encode_json_frame(payload: object, event: str | None = None,
                      event_id: str | None = None, retry_ms: int | None = None) -> bytes:
    """A frame whose data is ``payload`` as one line of JSON (orjson never emits raw
    line breaks: they are escaped inside strings)."""
    return encode_frame(orjson.dumps(payload), event=event, event_id=event_id,
                        retry_ms=retry_ms)


HEARTBEAT_COMMENT = b": heartbeat\n\n"


def message_frame(entry, named: bool) -> bytes:
    """The frame of a stream entry, with or without the ``event:`` field: encoded once
    per entry and kept on it, so that every subscriber shares the same bytes."""
    if named:
        frame = entry.named_frame
        if frame is None:
            frame = entry.named_frame = encode_message_frame(entry.event_id, entry.type,
                                                             entry.body)
        return frame
    frame = entry.plain_frame
    if frame is None:
        frame = entry.plain_frame = encode_message_frame(entry.event_id, None, entry.body)
    return frame


def encode_message_frame(event_id: str, event: str | None, body: bytes) -> bytes:
    """The hot-path frame for a stored message.

    ``body`` is one line of JSON produced by orjson and ``event`` a validated message
    type, so neither can hold a line break; ``event_id`` is checked by its caller's
    format. Built by concatenation, once per message, shared by all subscribers.
    """
    if event is None:
        return b"id: " + event_id.encode() + b"\ndata: " + body + b"\n\n"
    return (b"id: " + event_id.encode() + b"\nevent: " + event.encode()
            + b"\ndata: " + body + b"\n\n")


def encode_unpositioned_frame(event: str | None, body: bytes) -> bytes:
    """A stored message's frame without ``id:``: a message delivered again (delivery
    confirmation) must not move the client's position in the stream."""
    if event is None:
        return b"data: " + body + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"


def _comment_lines(text: str) -> str:
    """``text`` as comment lines; a line break in it cannot start a field."""
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text))


def encode_retry(milliseconds: int) -> bytes:
    """Tell the client how long to wait before reconnecting."""
    return f"retry: {int(milliseconds)}\n\n".encode()


def encode_position(event_id: str, comment: str = "heartbeat") -> bytes:
    """A comment that also moves the client's Last-Event-ID forward without firing an
    event (an ``id:`` field with no ``data:``), so a reconnect resumes from here."""
    return (_comment_lines(comment) + _field("id", event_id) + "\n").encode("utf-8")
