"""The entries this worker routed most recently, kept in memory for resumes.

After a deploy or a network blip every client comes back at once, nearly all of them
with a Last-Event-ID a few seconds old. Replaying what they missed from Redis would cost
a round trip (or several) per client in the same second; the hub already had every one
of those entries in hand, so it keeps the newest of them. A resume whose position lies
inside what is kept is served from memory, with no Redis call at all.

What is kept is contiguous: every entry of the stream after ``floor`` up to the newest
routed one, whatever its topics. It is bounded in entries and in bytes (of message
bodies); the oldest go first. It also knows, for each topic of what it keeps, its newest
entry: most clients of a crowd have nothing new on their own topics, and learn so without
a look at the entries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import islice

from ..store import Entry
from .topics import BROADCAST_TOPIC


class RecentHistory:
    """Every entry after ``floor`` (an (ms, seq) key of ``epoch``) that the hub routed,
    oldest first, at most ``max_entries`` of them and ``max_bytes`` of bodies."""

    __slots__ = ("_bytes", "_entries", "_newest_by_topic", "epoch", "floor", "max_bytes",
                 "max_entries")

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: deque[Entry] = deque()
        # topic -> the key of the newest kept entry that bears it
        self._newest_by_topic: dict[str, tuple[int, int]] = {}
        self._bytes = 0
        self.epoch = "0"
        self.floor: tuple[int, int] = (0, 0)

    def restart(self, epoch: str, key: tuple[int, int]) -> None:
        """Forget everything: the hub routes from ``key`` of ``epoch`` on."""
        self._entries.clear()
        self._newest_by_topic.clear()
        self._bytes = 0
        self.epoch = epoch
        self.floor = key

    def seed(self, entries: list[Entry]) -> None:
        """Start from the stream's newest entries (oldest first, consecutive, ending where
        the hub routes from): what a worker that just started can resume from memory."""
        if entries:
            self.restart(entries[0].epoch, entries[0].key)
            self.add(entries[1:])

    def add(self, entries: list[Entry]) -> None:
        """Keep a routed batch (in stream order, following what is kept)."""
        if not self.max_entries:
            if entries:
                self.floor = entries[-1].key
                self.epoch = entries[-1].epoch
            return
        kept = self._entries
        newest = self._newest_by_topic
        for entry in entries:
            if entry.epoch != self.epoch:
                self.restart(entry.epoch, (0, 0))
            kept.append(entry)
            self._bytes += len(entry.body)
            key = (entry.ms, entry.seq)
            for topic in entry.topics:
                newest[topic] = key
        while kept and (len(kept) > self.max_entries or self._bytes > self.max_bytes):
            oldest = kept.popleft()
            self._bytes -= len(oldest.body)
            key = self.floor = (oldest.ms, oldest.seq)
            for topic in oldest.topics:
                if newest.get(topic) == key:  # no kept entry bears it any more
                    del newest[topic]

    def covers(self, epoch: str, key: tuple[int, int]) -> bool:
        """Whether everything after ``key`` of ``epoch`` up to the newest routed entry is
        kept (so a client there can be resumed from memory)."""
        if epoch != self.epoch or key < self.floor:
            return False
        newest = self._entries[-1].key if self._entries else self.floor
        return key <= newest

    def touched_after(self, key: tuple[int, int], topics: frozenset[str]) -> bool:
        """Whether a kept entry newer than ``key`` bears one of ``topics`` (or goes to
        everyone): False means a resume from ``key`` has nothing to send."""
        newest = self._newest_by_topic
        if newest.get(BROADCAST_TOPIC, (0, 0)) > key:
            return True
        return any(newest.get(topic, (0, 0)) > key for topic in topics)

    @property
    def newest_entry(self) -> Entry | None:
        return self._entries[-1] if self._entries else None

    def after(self, key: tuple[int, int]) -> list[Entry]:
        """The kept entries newer than ``key``, oldest first (call ``covers`` first).
        Resumes are mostly near the newest entry, so this looks from the end."""
        kept = self._entries
        count = 0
        for entry in reversed(kept):
            if entry.key <= key:
                break
            count += 1
        return list(islice(reversed(kept), count))[::-1]

    def newest_first(self, key: tuple[int, int]) -> Iterator[Entry]:
        """The kept entries newer than ``key``, newest first, lazily (the admin
        dashboard's tail reads the few newest without copying the rest)."""
        for entry in reversed(self._entries):
            if entry.key <= key:
                return
            yield entry

    @property
    def newest_key(self) -> tuple[int, int]:
        """The key of the newest routed entry (``floor`` when none is kept)."""
        return self._entries[-1].key if self._entries else self.floor

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes
