"""The worker's one reader: blocking XREAD on the message stream, feeding the hub.

It reads from a concrete id (where the hub has routed to), hands each batch to the hub,
and never dies: on a Redis failure it backs off (background.py), finds its place again
and resumes from the last id it routed, so nothing is lost or repeated. After a start it
begins at the stream's newest entry; when the stream was recreated (its epoch changed,
Redis lost its data) it reads the new stream from its beginning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gevent.event import Event

from ..background import Loop
from ..settings import Settings
from ..store import Entry, MessageStore
from .hub import Hub
from .position import Position
from .stats import WorkerStats

log = logging.getLogger(__name__)

# The type of the health probes (probe.py): no published message can have it.
PROBE_TYPE = "probe"


@dataclass(frozen=True)
class ReaderStatus:
    """A snapshot of the reader for the registry, metrics and health."""

    alive: bool
    started_at: float | None
    last_read_ok: float | None
    last_error: str | None
    lag_seconds: float


class Reader:
    """Reads the stream for ``hub`` in one greenlet. ``ready`` is set once it knows where
    to read from. Call ``start()`` in the worker process after fork."""

    def __init__(self, settings: Settings, store: MessageStore, hub: Hub,
                 stats: WorkerStats) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.stats = stats
        self.ready = Event()
        self.started_at: float | None = None
        self.last_read_ok: float | None = None
        self.last_error: str | None = None
        self.lag_seconds = 0.0
        self._client = None
        self._resync = True
        self._loop = Loop(self._read, "reader", on_failure=self._failed)
        # Called with each health probe the reader routes (probe.py sets it).
        self.on_probe: Callable[[Entry], None] | None = None

    def start(self) -> None:
        """Start reading. Idempotent."""
        if self._loop.start():
            self.started_at = time.time()

    def stop(self) -> None:
        self._loop.stop()

    def reconnect(self) -> None:
        """Drop the connection to Redis and read again from where the hub has routed (a
        health probe no longer comes through: the connection may lead nowhere, as to a
        primary that a failover demoted)."""
        self._loop.stop()
        self._failed(ConnectionResetError("reconnecting: health probes stopped coming"))
        self._loop.start()

    @property
    def alive(self) -> bool:
        return self._loop.alive

    def status(self) -> ReaderStatus:
        return ReaderStatus(self.alive, self.started_at, self.last_read_ok, self.last_error,
                            self.lag_seconds)

    def _read(self) -> None:
        if self._client is None:
            self._client = self.store.reader_client()
        if self._resync:
            self._find_place()
            self._resync = False
            self.last_read_ok = time.time()
            self.ready.set()
        entries = self.store.read(self._client, self.hub.position.key,
                                  self.settings.reader_block_ms, self.settings.reader_batch_size)
        if entries and entries[-1].epoch != self.hub.position.epoch:
            entries = self._with_skipped_entries(entries)
        self.last_read_ok = time.time()
        if self.last_error is not None:
            log.info("reader reached Redis again")
            self.last_error = None
        if entries:
            self.hub.route(entries)
            self.lag_seconds = max(0.0, time.time() - entries[-1].ms / 1000)
            on_probe = self.on_probe
            if on_probe is not None:
                for entry in entries:
                    if entry.type == PROBE_TYPE:
                        on_probe(entry)
        else:
            self.lag_seconds = 0.0

    def _with_skipped_entries(self, entries: list[Entry]) -> list[Entry]:
        """``entries`` with the ones the read skipped put back, when the stream was
        recreated under a connection that stayed open (FLUSHALL, a deleted key).

        The read asked for ids after the old stream's last routed one; the new stream's
        ids start again from the clock, so its first entries can be at or below that id
        and the read passed over them. Each entry names the one written before it: the
        first entry of the new epoch names one (not ``0-0``) when it was not the new
        stream's first, and those before it are read from the stream's start. Entries of
        any other epoch found there (a stream whose epoch key alone was lost) were routed
        already and are left out."""
        routed_epoch = self.hub.position.epoch
        for index, entry in enumerate(entries):
            if entry.epoch != routed_epoch:
                break
        else:
            return entries
        if entry.previous == (0, 0):
            return entries  # the new stream's very first entry: nothing was passed over
        skipped = self.store.read_before(entry.key, entry.epoch, self._client)
        if skipped:
            log.warning("stream recreated (epoch %s): %d entries read again from its start",
                        entry.epoch, len(skipped))
        return entries[:index] + skipped + entries[index:]

    def _failed(self, error: Exception) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        self.stats.read_errors += 1
        self._resync = True
        if self._client is not None:
            self._client.close()
            self._client = None

    def _find_place(self) -> None:
        """Where to read from, after a start or an outage: the first time, after the
        stream's newest entry; later, after the last routed entry, unless the stream was
        recreated (its epoch changed): then from its beginning."""
        epoch = self.store.current_epoch(self._client)
        routed = self.hub.position
        if not self.ready.is_set():
            position = Position(epoch, *self.store.head_key(self._client))
            log.info("reader starts after %s", position.event_id)
            self.hub.move_to(position)
            self._seed_recent_history(position)
            return
        if epoch != routed.epoch:
            log.warning("stream epoch changed %s -> %s: reading the new stream from its start",
                        routed.epoch, epoch)
            self.hub.move_to(Position(epoch, 0, 0))

    def _seed_recent_history(self, head: Position) -> None:
        """A worker that just started (a deploy: every client comes back at once, most
        with a Last-Event-ID of a few seconds ago) begins with the stream's newest entries
        in its recent history, so that those resumes need nothing from Redis."""
        recent = self.hub.recent
        if not recent.max_entries:
            return
        newest = self.store.read_newest(recent.max_entries, recent.max_bytes, self._client)
        if newest and newest[-1].key == head.key and all(
                entry.epoch == head.epoch for entry in newest):
            recent.seed(newest)
