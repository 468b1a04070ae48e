"""Positions in the message stream and the event ids that carry them.

An event id is ``<epoch>-<ms>-<seq>``: the Redis Stream entry id ``<ms>-<seq>`` plus the
epoch of the stream. The epoch changes whenever the stream is recreated (for example
after Redis lost its data), so an id from an earlier life of the stream is recognised
instead of being compared with ids it has nothing to do with.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_EVENT_ID = re.compile(r"([A-Za-z0-9]{1,32})-([0-9]{1,20})-([0-9]{1,20})")
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_U64 = 2**64 - 1


class Position(NamedTuple):
    """A point in the stream: everything up to and including (ms, seq) of ``epoch``."""

    epoch: str
    ms: int
    seq: int

    @property
    def stream_id(self) -> str:
        return f"{self.ms}-{self.seq}"

    @property
    def event_id(self) -> str:
        return f"{self.epoch}-{self.ms}-{self.seq}"

    @property
    def key(self) -> tuple[int, int]:
        """What positions of one epoch are ordered by."""
        return (self.ms, self.seq)


class ClientPosition:
    """Where one connection's client stands: the epoch and the (ms, seq) key of the newest
    entry it was given or moved past. Its ``event_id`` is what the client resumes from.

    Mutable, one per connection, changed only by that connection's event stream."""

    __slots__ = ("epoch", "key")

    def __init__(self, epoch: str, key: tuple[int, int] = (0, 0)) -> None:
        self.epoch = epoch
        self.key = key

    @property
    def known(self) -> bool:
        """False before the client was given anything (key 0-0)."""
        return self.key != (0, 0)

    @property
    def event_id(self) -> str:
        ms, seq = self.key
        return f"{self.epoch}-{ms}-{seq}"

    def __repr__(self) -> str:
        return f"ClientPosition({self.event_id})"


def parse_event_id(text: str) -> Position | None:
    """The position in an event id, or None when ``text`` is not one of ours."""
    match = _EVENT_ID.fullmatch(text.strip())
    if match is None:
        return None
    ms, seq = int(match.group(2)), int(match.group(3))
    if ms > _MAX_U64 or seq > _MAX_U64:
        return None
    return Position(match.group(1), ms, seq)


def parse_stream_id(text: str | bytes) -> tuple[int, int]:
    """``b"1700000000000-3"`` -> ``(1700000000000, 3)``."""
    if isinstance(text, bytes):
        text = text.decode()
    match = _STREAM_ID.fullmatch(text)
    if match is None:
        raise ValueError(f"not a stream id: {text!r}")
    return int(match.group(1)), int(match.group(2))
