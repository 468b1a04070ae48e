"""The reader: where it starts, how it keeps its place across outages, what it hands the
hub, and that it never dies."""

from __future__ import annotations

import time

import pytest

from pushservice.engine.hub import Hub
from pushservice.engine.position import Position
from pushservice.engine.reader import Reader
from pushservice.engine.stats import WorkerStats
from pushservice.errors import StoreUnavailableError
from pushservice.store import Entry
from tests.support.waiting import wait_until


class FakeStore:
    """The part of the message store the reader uses, with a stream of entries and an
    outage switch."""

    def __init__(self, epoch: str, head: tuple[int, int]) -> None:
        self.epoch = epoch
        self.head = head
        self.entries: list[Entry] = []
        self.down = False
        self.reads: list[tuple[int, int]] = []
        self.clients_made = 0
        self.block_seconds: float | None = None  # None: what the reader asks for

    def reader_client(self):
        self.clients_made += 1
        return self

    def close(self) -> None:
        pass

    def current_epoch(self, client=None) -> str:
        self._check()
        return self.epoch

    def head_key(self, client=None) -> tuple[int, int]:
        return self.head

    def read_newest(self, count, max_bytes, client=None):
        return [e for e in self.entries if e.key <= self.head][-count:]

    def read(self, client, after, block_ms, count):
        self._check()
        self.reads.append(after)
        found = [e for e in self.entries if e.key > after][:count]
        if not found:
            time.sleep(block_ms / 1000 if self.block_seconds is None else self.block_seconds)
        return found

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError("Redis is unavailable")


def entry(ms: int, seq: int = 0, epoch: str = "ep") -> Entry:
    return Entry(ms, seq, epoch, ("news",), "info", b"{}", 0)


@pytest.fixture
def make_reader(settings):
    started: list[Reader] = []

    def make(store: FakeStore) -> Reader:
        chosen = settings.replace(reader_block_ms=10)
        stats = WorkerStats()
        reader = Reader(chosen, store, Hub(chosen, stats), stats)
        reader.start()
        started.append(reader)
        return reader

    yield make
    for reader in started:
        reader.stop()


def test_it_starts_after_the_newest_entry(make_reader):
    reader = make_reader(FakeStore("ep", (1700000000000, 3)))

    assert reader.ready.wait(2)
    assert reader.hub.position == Position("ep", 1700000000000, 3)


def test_it_routes_what_it_reads_and_keeps_reading_from_there(make_reader):
    store = FakeStore("ep", (1700000000000, 0))
    reader = make_reader(store)
    reader.ready.wait(2)

    store.entries = [entry(1700000000001), entry(1700000000002)]

    wait_until(lambda: reader.hub.position.key == (1700000000002, 0), 2,
               message="the entries to be routed")
    assert reader.stats.routed_entries == 2
    wait_until(lambda: store.reads[-1] == (1700000000002, 0), 2, message="the next read")


def test_lag_is_the_age_of_the_newest_routed_entry(make_reader):
    store = FakeStore("ep", (0, 0))
    reader = make_reader(store)
    reader.ready.wait(2)
    store.block_seconds = 30  # the read after the batch finds nothing for a long while
    now_ms = int(time.time() * 1000)

    store.entries = [entry(now_ms - 9000), entry(now_ms - 2000)]

    wait_until(lambda: reader.hub.position.key == (now_ms - 2000, 0), 2, message="routing")
    assert 1.9 <= reader.lag_seconds < 30


def test_an_outage_is_reported_and_survived_without_losing_its_place(make_reader):
    store = FakeStore("ep", (1700000000000, 3))
    reader = make_reader(store)
    reader.ready.wait(2)
    store.entries = [entry(1700000000500)]
    wait_until(lambda: reader.hub.position.key == (1700000000500, 0), 2, message="routing")

    store.down = True
    wait_until(lambda: reader.last_error is not None, 2, message="the outage to be noticed")
    assert reader.alive and reader.stats.read_errors >= 1
    store.head = (1700000009999, 0)  # written while the reader was away: not skipped
    store.entries.append(entry(1700000009999))
    store.down = False

    wait_until(lambda: reader.hub.position.key == (1700000009999, 0), 3,
               message="the entry written during the outage")
    wait_until(lambda: reader.last_error is None, 2, message="the error to clear")
    assert reader.status().alive
    assert store.clients_made >= 2  # a fresh connection after the failure


def test_a_recreated_stream_is_read_from_its_start(make_reader):
    store = FakeStore("ep", (1700000000000, 3))
    reader = make_reader(store)
    reader.ready.wait(2)

    store.down = True
    wait_until(lambda: reader.last_error is not None, 2, message="the outage")
    store.epoch = "ep2"
    store.entries = [entry(5, epoch="ep2")]
    store.down = False

    wait_until(lambda: reader.hub.position == Position("ep2", 5, 0), 3,
               message="the new stream read from its start")


def test_a_starting_reader_keeps_the_streams_newest_entries_for_resumes(make_reader):
    store = FakeStore("ep", (1700000000003, 0))
    store.entries = [entry(1700000000000 + n) for n in range(4)]

    reader = make_reader(store)

    assert reader.ready.wait(2)
    recent = reader.hub.recent
    # A client that saw entry 1 resumes from memory: 2 and 3 are kept.
    assert recent.covers("ep", (1700000000001, 0))
    assert [e.ms for e in recent.after((1700000000001, 0))] == [1700000000002, 1700000000003]


def test_a_reconnect_takes_a_fresh_connection_and_keeps_the_place(make_reader):
    store = FakeStore("ep", (1700000000003, 0))
    reader = make_reader(store)
    reader.ready.wait(2)
    made = store.clients_made

    reader.reconnect()
    store.entries = [entry(1700000000004)]

    wait_until(lambda: reader.hub.position.key == (1700000000004, 0), 3,
               message="reading on after the reconnect")
    assert store.clients_made > made
    assert reader.alive
