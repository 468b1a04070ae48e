"""Server-Sent Events parsing, as the HTML standard specifies it (no I/O).

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation:
lines end with CRLF, LF or CR; a line starting with ``:`` is a comment; ``field: value``
(one leading space of the value dropped), a line without a colon is a field with an
empty value; fields ``event``, ``data`` (lines joined with LF), ``id`` (ignored when
it holds NUL) and ``retry`` (ASCII digits only); an empty line dispatches the event.
A block without data dispatches nothing but still sets the last event id (the service
sends resume points that way); a block the stream ends in the middle of is dropped.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any

_LINE_END = re.compile(r"\r\n|\r|\n")
CONTROL_EVENTS = frozenset({"connected", "history-lost", "closing", "heartbeat"})


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One dispatched event: ``type`` is the ``event`` field ("message" without one),
    ``data`` its data lines joined, ``id`` the last event id once it was read."""

    type: str
    data: str
    id: str


@dataclass(frozen=True, slots=True)
class Event:
    """What a subscription yields.

    ``type`` is the message type (``progress``, ...; taken from the message itself when
    the stream is unnamed) or a control event's name (``connected``, ``history-lost``,
    ``closing``, ``heartbeat``). ``data`` is the parsed JSON of the frame: for a message,
    the whole message (``data["data"]`` is its payload); the raw text when it is not
    JSON. ``id`` is the event id (what the subscription resumes after); ``raw`` the data
    text as received.
    """

    type: str
    data: Any
    id: str
    raw: str

    @property
    def is_control(self) -> bool:
        """True for ``connected``, ``history-lost``, ``closing`` and ``heartbeat``."""
        return self.type in CONTROL_EVENTS

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "event", "data"}``, as the CLI prints it."""
        return {"id": self.id, "event": self.type, "data": self.data}

    @classmethod
    def from_raw(cls, raw: RawEvent) -> Event:
        """Parse the data as JSON (when it is) and name the event."""
        try:
            data: Any = json.loads(raw.data)
        except ValueError:
            data = raw.data
        kind = raw.type
        if kind == "message" and isinstance(data, dict) and isinstance(data.get("type"), str):
            kind = data["type"]  # an unnamed stream (?named=0): the message says its type
        return cls(kind, data, raw.id, raw.data)


class SSEParser:
    """Incremental parser: ``feed(bytes)`` returns the events it completed.

    ``last_event_id`` and ``retry_ms`` (None until the stream sends one) follow the
    stream; ``comments`` counts comment lines (heartbeats).
    """

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self.comments = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._after_cr = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[RawEvent]:
        """Parse ``chunk`` (any split of the stream's bytes)."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text:
            self._after_cr = False
            text = text.removeprefix("\n")  # the LF of a CRLF split across chunks
        if not text:
            return []
        self._after_cr = text.endswith("\r")
        buffer = self._buffer + text
        events: list[RawEvent] = []
        start = 0
        # Only CR and LF end lines: str.splitlines would also split on U+2028 and other
        # characters that JSON data may hold verbatim.
        for end in _LINE_END.finditer(buffer):
            event = self._line(buffer[start:end.start()])
            start = end.end()
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> RawEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> RawEvent | None:
        if self._id is not None:
            self.last_event_id = self._id
            self._id = None
        if not self._data:
            self._event = ""
            return None
        event = RawEvent(self._event or "message", "\n".join(self._data), self.last_event_id)
        self._event = ""
        self._data = []
        return event
