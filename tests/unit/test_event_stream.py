"""The life of one SSE response, driven by hand: where a resumed stream starts, the greeting,
replay then live without loss or duplicates at the seam, heartbeats, and the final frame
that says why the stream ended."""

from __future__ import annotations

import errno
import json
import time

import gevent
import pytest
from gevent.event import Event as GeventEvent

from pushservice.engine import event_stream
from pushservice.engine.event_stream import (
    REPLAY_CONTINUE_RETRY_MS,
    WRITE_CHUNK_BYTES,
    ClientTooSlowError,
    EventStream,
    ResumePlan,
    StreamContext,
    plan_resume,
)
from pushservice.engine.hub import Hub
from pushservice.engine.position import Position, parse_event_id
from pushservice.engine.recent import RecentHistory
from pushservice.engine.stats import WorkerStats
from pushservice.engine.subscription import CloseReason, Heartbeat, Subscription
from pushservice.errors import StoreUnavailableError
from pushservice.store import Entry, StreamInfo
from pushservice.store.messages import parse_stream_info
from tests.support import redis_replies

EP = "ep1"
T0 = 1_700_000_000_000  # ms of the first entry in these tests


def key(n: int) -> tuple[int, int]:
    return (T0 + n, 0)


def event_id(n: int, epoch: str = EP) -> str:
    return Position(epoch, *key(n)).event_id


def entry(n: int, *topics: str, epoch: str = EP, expires_at_ms: int = 0) -> Entry:
    topics = topics or ("user:u1", "service:svc")
    return Entry(T0 + n, 0, epoch, topics, "progress", b'{"n":%d}' % n, expires_at_ms)


# -- plan_resume ------------------------------------------------------------------------


def info(first=None, last=None, epoch=EP, length=None) -> StreamInfo:
    first_key = None if first is None else key(first)
    last_key = None if last is None else key(last)
    if length is None:
        length = 0 if first is None else last - first + 1
    return StreamInfo(epoch, length, first_key, last_key)


# A hub that keeps no recent history: every resume asks Redis.
NOWHERE = RecentHistory(0, 0)


def never_called() -> StreamInfo:
    raise AssertionError("stream info was not needed")


def test_fresh_connection_is_live_only():
    assert plan_resume(None, NOWHERE, never_called) == ResumePlan(None)


@pytest.mark.parametrize("last_event_id", ["", "garbage", "12345", "ep1-5", "ep1-5-0\nx",
                                           "ep1-a-0"])
def test_malformed_last_event_id_is_told_and_goes_live(last_event_id):
    plan = plan_resume(last_event_id, NOWHERE, never_called)

    assert plan.replay_after is None
    assert plan.lost == {"reason": "malformed_last_event_id", "last_event_id": last_event_id,
                         "resumes_from": "now"}


def test_id_of_another_epoch_replays_the_new_stream_from_its_start():
    plan = plan_resume(event_id(5, "old"), NOWHERE, lambda: info(first=10, last=20))

    assert plan.replay_after == (0, 0)
    assert plan.lost == {"reason": "stream_reset", "last_event_id": event_id(5, "old"),
                         "resumes_from": event_id(10)}


def test_id_of_another_epoch_with_a_lost_stream_resumes_now():
    plan = plan_resume(event_id(5, "old"), NOWHERE, lambda: info(epoch=None))

    assert plan.replay_after == (0, 0)
    assert plan.lost["reason"] == "stream_reset"
    assert plan.lost["resumes_from"] == "now"


def test_id_from_the_future_goes_live_and_says_so():
    plan = plan_resume(event_id(99), NOWHERE, lambda: info(first=10, last=20))

    assert plan.replay_after is None
    assert plan.lost["reason"] == "unknown_position"
    assert plan.lost["resumes_from"] == "now"


def test_id_of_the_current_epoch_on_a_missing_stream_is_unknown():
    plan = plan_resume(event_id(5), NOWHERE, lambda: info())

    assert plan.replay_after is None
    assert plan.lost["reason"] == "unknown_position"


@pytest.mark.parametrize("resume_at", [10, 15, 20])
def test_kept_position_replays_after_it(resume_at):
    assert plan_resume(event_id(resume_at), NOWHERE, lambda: info(first=10, last=20)) == (
        ResumePlan(key(resume_at), epoch=EP))


# Lost-history detection, on what real servers of each version reported after real
# publishes (tests/support/redis_replies.py): Redis 7 leaves max-deleted-entry-id at 0-0
# after a trim, which an invented reply would hide.
REPLIES = redis_replies.load()


def recorded(version: str, scenario: str) -> tuple[list[str], StreamInfo]:
    data = REPLIES[version][scenario]
    published = data["published"]
    return published, parse_stream_info(published[0].split("-")[0], data["xinfo"])


def first_kept(published: list[str], info: StreamInfo) -> int:
    return [parse_event_id(event_id).key for event_id in published].index(info.first)


@pytest.mark.parametrize("scenario", ["trimmed_by_length", "trimmed_by_age"])
@pytest.mark.parametrize("version", sorted(REPLIES))
def test_a_trimmed_position_is_told_and_replays_what_is_kept(version, scenario):
    published, info = recorded(version, scenario)
    first = first_kept(published, info)
    assert first > 1, "the recording trimmed nothing"

    for event_id in published[:first - 1]:
        plan = plan_resume(event_id, NOWHERE, lambda: info)
        # It replays what the stream holds after the client's position: the oldest kept.
        assert plan.replay_after == parse_event_id(event_id).key
        assert plan.lost == {"reason": "history_trimmed", "last_event_id": event_id,
                             "resumes_from": published[first]}


@pytest.mark.parametrize("scenario", ["trimmed_by_length", "trimmed_by_age"])
@pytest.mark.parametrize("version", sorted(REPLIES))
def test_the_last_trimmed_position_lost_nothing(version, scenario):
    # A client holding the newest removed entry missed nothing that was removed: it
    # resumes from there, without a false alarm.
    published, info = recorded(version, scenario)
    last_removed = published[first_kept(published, info) - 1]

    assert plan_resume(last_removed, NOWHERE, lambda: info) == ResumePlan(
        parse_event_id(last_removed).key, epoch=parse_event_id(last_removed).epoch)


@pytest.mark.parametrize("scenario", ["trimmed_by_length", "trimmed_by_age", "untrimmed"])
@pytest.mark.parametrize("version", sorted(REPLIES))
def test_a_kept_position_resumes_after_it(version, scenario):
    published, info = recorded(version, scenario)

    for event_id in published[first_kept(published, info):]:
        position = parse_event_id(event_id)
        assert plan_resume(event_id, NOWHERE, lambda: info) == ResumePlan(
            position.key, epoch=position.epoch)


@pytest.mark.parametrize("version", sorted(REPLIES))
def test_a_client_that_joined_before_the_first_message_lost_nothing(version):
    # A client that connected to an empty stream holds its position 0-0.
    published, info = recorded(version, "untrimmed")
    epoch = published[0].split("-")[0]

    assert plan_resume(f"{epoch}-0-0", NOWHERE, lambda: info) == ResumePlan((0, 0), epoch=epoch)


@pytest.mark.parametrize("version", sorted(REPLIES))
def test_everything_removed_is_told_and_goes_live(version):
    published, info = recorded(version, "emptied")
    assert info.first is None

    for event_id in published[:-1]:
        plan = plan_resume(event_id, NOWHERE, lambda: info)
        assert plan.lost["reason"] == "history_trimmed"
        assert plan.lost["resumes_from"] == "now"
    newest = parse_event_id(published[-1])
    assert plan_resume(published[-1], NOWHERE, lambda: info) == ResumePlan(
        newest.key, epoch=newest.epoch)


@pytest.mark.parametrize("version", [v for v in sorted(REPLIES) if int(v.split(".")[0]) >= 7])
def test_an_entry_deleted_by_hand_is_told_on_redis_7(version):
    published, info = recorded(version, "entry_deleted")
    (deleted,) = REPLIES[version]["entry_deleted"]["deleted"]
    position = published.index(deleted)

    for event_id in published[:position]:
        assert plan_resume(event_id, NOWHERE, lambda: info).lost["reason"] == "history_trimmed"
    for event_id in published[position:]:
        assert plan_resume(event_id, NOWHERE, lambda: info).lost is None


def test_an_entry_written_before_predecessors_were_recorded_is_taken_as_lost():
    # A first kept entry without ``p`` (written by an older version): no silent gap.
    kept = StreamInfo(EP, 11, key(10), key(20))
    assert plan_resume(event_id(5), NOWHERE, lambda: kept).lost["reason"] == "history_trimmed"
    never_trimmed = StreamInfo(EP, 11, key(10), key(20), entries_added=11)
    assert plan_resume(event_id(5), NOWHERE, lambda: never_trimmed) == ResumePlan(
        key(5), epoch=EP)


def test_store_unavailable_while_planning_propagates():
    def down() -> StreamInfo:
        raise StoreUnavailableError("Redis is unavailable")

    with pytest.raises(StoreUnavailableError):
        plan_resume(event_id(5), NOWHERE, down)


# -- event streams ----------------------------------------------------------------------


class FakeStore:
    """The part of the message store an event stream uses: read_range over a list."""

    def __init__(self, entries=()) -> None:
        self.entries = sorted(entries, key=lambda e: e.key)
        self.reads = 0
        self.fail = False

    def read_range(self, after, count):
        self.reads += 1
        if self.fail:
            raise StoreUnavailableError("Redis is unavailable", retry_after=2)
        return [e for e in self.entries if e.key > after][:count]

    def stream_info(self) -> StreamInfo:
        if not self.entries:
            return StreamInfo(EP, 0, None, None)
        return StreamInfo(EP, len(self.entries), self.entries[0].key, self.entries[-1].key)


class Client:
    """Reads an event stream the way the WSGI server does, one chunk per call, and parses
    it; a call that would block fails the test instead of hanging it."""

    def __init__(self, stream: EventStream, parse, last_event_id: str = "") -> None:
        self.stream = stream
        self.parse = parse
        self.body = iter(stream)
        self.raw = b""
        self.last_event_id = last_event_id

    def next(self) -> bytes:
        with gevent.Timeout(2, AssertionError("the stream blocked with nothing to send")):
            chunk = next(self.body)
        self.raw += chunk
        return chunk

    def rest(self) -> list[bytes]:
        """Every chunk up to the end of the stream (it must be ending)."""
        chunks = []
        while True:
            try:
                chunks.append(self.next())
            except StopIteration:
                return chunks

    @property
    def parsed(self):
        return self.parse(self.raw, self.last_event_id)

    def events(self, *types: str):
        return [e for e in self.parsed.events if not types or e.type in types]

    def numbers(self) -> list[int]:
        return [json.loads(e.data)["n"] for e in self.events("progress", "message")]


@pytest.fixture
def open_stream(settings, sse):
    """Opens an event stream as web/streams.py does (registered with a hub first), on a
    FakeStore; ``hub_at`` is the entry the hub has routed up to."""
    streams: list[EventStream] = []

    def open_(plan: ResumePlan | None = None, topics=("user:u1",), entries=(),
              hub_at: int | None = None, settings=settings, named: bool = True,
              queue_size: int = 100, last_event_id: str = "", on_close=None,
              **options) -> Client:
        store = FakeStore(entries)
        stats = WorkerStats()
        hub = Hub(settings, stats)
        hub.move_to(Position(EP, *(key(hub_at) if hub_at is not None else (0, 0))))
        subscription = Subscription(tuple(topics), queue_size, named=named)
        start = hub.register(subscription)

        def closed(stream: EventStream) -> None:
            hub.unregister(stream.subscription)
            if on_close is not None:
                on_close(stream)

        context = StreamContext(settings, store, stats, hub.recent, closed)
        stream = EventStream(context, subscription, start, plan or ResumePlan(None),
                             **options)
        streams.append(stream)
        client = Client(stream, sse, last_event_id)
        client.hub, client.store, client.stats = hub, store, stats
        return client

    yield open_
    for stream in streams:
        stream.close()


def test_greeting_sets_the_retry_and_says_connected_with_a_resumable_id(open_stream,
                                                                       settings):
    client = open_stream(topics=("user:u1", "session:s1"), hub_at=7)

    client.next()

    parsed = client.parsed
    assert parsed.retry == settings.sse_retry_ms
    (connected,) = parsed.events
    assert connected.type == "connected"
    assert connected.last_event_id == event_id(7)
    greeting = json.loads(connected.data)
    assert greeting["connection_id"] == client.stream.subscription.id
    assert greeting["topics"] == ["user:u1", "session:s1"]
    assert greeting["heartbeat_interval"] == settings.heartbeat_interval
    assert greeting["last_event_id"] == event_id(7)


def test_live_entries_arrive_as_named_frames(open_stream):
    client = open_stream(hub_at=0)
    client.next()

    client.hub.route([entry(1), entry(2, "user:u2"), entry(3, "*")])
    client.next()

    frames = client.events("progress")
    assert [(e.last_event_id, json.loads(e.data)["n"]) for e in frames] == [
        (event_id(1), 1), (event_id(3), 3)]


def test_unnamed_streams_get_message_events(open_stream):
    client = open_stream(hub_at=0, named=False)
    client.next()

    client.hub.route([entry(1)])
    client.next()

    assert [e.type for e in client.parsed.events] == ["connected", "message"]


def test_waiting_live_entries_are_written_in_one_chunk(open_stream):
    client = open_stream(hub_at=0)
    client.next()
    client.hub.route([entry(n) for n in range(1, 6)])

    chunk = client.next()

    assert chunk.count(b"event: progress") == 5
    assert client.numbers() == [1, 2, 3, 4, 5]


def test_live_entries_already_covered_are_not_sent_again(open_stream):
    client = open_stream(hub_at=5)
    client.next()
    subscription = client.stream.subscription
    # Entries at or before the position the client was given are not new to it.
    subscription.offer(entry(4))
    subscription.offer(entry(5))
    subscription.offer(entry(6))

    client.next()

    assert client.numbers() == [6]


def test_replay_then_live_without_duplicates_at_the_seam(open_stream):
    stored = [entry(n) for n in range(1, 9)]
    # The client saw 2; the hub had routed up to 4 when the stream opened.
    client = open_stream(plan=ResumePlan(key(2)), entries=stored, hub_at=4,
                         last_event_id=event_id(2))
    # While the replay runs, the reader routes 5..8 (already in the stream) and then 9.
    client.hub.route(stored[4:])
    client.hub.route([entry(9)])

    client.next()  # greeting
    assert client.events("connected")[0].last_event_id == event_id(2)
    client.next()  # replay
    assert client.numbers() == [3, 4, 5, 6, 7, 8]
    client.next()  # live

    assert client.numbers() == [3, 4, 5, 6, 7, 8, 9]
    assert client.parsed.last_event_id == event_id(9)


def _resumed_from_memory(open_stream, settings, kept: list[Entry], after: int):
    """A client resuming after entry ``after`` on a hub whose recent history keeps
    ``kept`` (the hub keeps what it routed), once its greeting and replay are out."""
    client = open_stream(hub_at=0, last_event_id=event_id(after))
    client.hub.route(kept)
    plan = plan_resume(event_id(after), client.hub.recent, never_called)
    assert plan.from_memory
    resumed = open_stream(plan=plan, hub_at=None, last_event_id=event_id(after))
    resumed.hub.move_to(client.hub.position)
    resumed.hub.recent = client.hub.recent
    resumed.stream.context = event_stream.StreamContext(
        settings, resumed.store, resumed.stats, client.hub.recent, lambda stream: None)
    resumed.next()  # greeting
    resumed.next()  # replay
    return resumed


def test_a_resume_close_to_now_is_served_from_memory_without_redis(open_stream, settings):
    resumed = _resumed_from_memory(open_stream, settings, [entry(n) for n in range(1, 6)],
                                   after=2)

    assert resumed.numbers() == [3, 4, 5]
    assert resumed.store.reads == 0
    assert resumed.parsed.last_event_id == event_id(5)


def test_a_memory_resume_with_nothing_new_for_it_moves_on_without_a_scan(open_stream,
                                                                         settings):
    kept = [entry(n, "user:someone-else") for n in range(1, 6)]

    resumed = _resumed_from_memory(open_stream, settings, kept, after=2)

    assert resumed.numbers() == []
    assert resumed.stream.scanned == 0 and resumed.store.reads == 0
    # Its Last-Event-ID moves past what it was not sent: a reconnect starts from there.
    assert resumed.parsed.last_event_id == event_id(5)
    assert resumed.stream.subscription.position.key == key(5)


@pytest.mark.parametrize("topic", ["user:u1", "*"], ids=["its own topic", "broadcast"])
def test_a_memory_resume_scans_when_one_entry_is_for_it(open_stream, settings, topic):
    kept = [entry(1, "user:x"), entry(2, "user:x"), entry(3, topic), entry(4, "user:x")]

    resumed = _resumed_from_memory(open_stream, settings, kept, after=1)

    assert resumed.numbers() == [3]
    assert resumed.parsed.last_event_id == event_id(4)


def test_a_memory_resume_whose_history_moved_on_reads_redis(open_stream):
    stored = [entry(n) for n in range(1, 6)]
    # Planned from memory, but the hub no longer has it.
    plan = ResumePlan(key(2), epoch=EP, from_memory=True, last_event_id=event_id(2))

    client = open_stream(plan=plan, entries=stored, hub_at=5, last_event_id=event_id(2))
    client.next()
    client.next()

    assert client.numbers() == [3, 4, 5]
    assert client.store.reads >= 1


def test_a_resume_ahead_of_this_workers_reader_never_moves_the_client_back(open_stream):
    # The client saw 7 on another worker; this worker's reader has only routed up to 4,
    # and nothing follows 7 in the stream yet.
    stored = [entry(n) for n in range(1, 8)]
    client = open_stream(plan=ResumePlan(key(7), epoch=EP), entries=stored, hub_at=4,
                         last_event_id=event_id(7))

    client.next()  # greeting: the client's own position
    assert client.parsed.last_event_id == event_id(7)
    client.hub.route([entry(5), entry(6), entry(7)])  # the reader catches up
    client.hub.route([entry(8)])
    client.stream.subscription.offer(Heartbeat(Position(EP, *key(6))))
    chunk = client.next()  # the replay found nothing after 7: the live frames

    assert client.numbers() == [8]  # exactly what follows 7
    assert client.parsed.last_event_id == event_id(8)
    assert b"id: " + event_id(6).encode() not in chunk


def test_a_trim_after_planning_is_told_at_replay(open_stream):
    # Planned as intact, but by the time of the replay the entries after 2 were trimmed:
    # the first kept one names 4 as the entry before it.
    kept = [Entry(T0 + 5, 0, EP, ("user:u1",), "progress", b'{"n":5}', 0,
                  previous_id=f"{T0 + 4}-0".encode())]
    client = open_stream(plan=ResumePlan(key(2), epoch=EP), entries=kept, hub_at=5,
                         last_event_id=event_id(2))

    client.next()
    client.next()

    (lost,) = client.events("history-lost")
    assert json.loads(lost.data) == {"reason": "history_trimmed", "last_event_id": event_id(2),
                                     "resumes_from": event_id(5)}
    assert client.numbers() == [5]
    assert client.stats.history_lost == 1


def test_no_trim_is_told_when_the_first_entry_follows_the_client(open_stream):
    kept = [Entry(T0 + 3, 0, EP, ("user:u1",), "progress", b'{"n":3}', 0,
                  previous_id=f"{T0 + 2}-0".encode())]
    client = open_stream(plan=ResumePlan(key(2), epoch=EP), entries=kept, hub_at=3,
                         last_event_id=event_id(2))

    client.next()
    client.next()

    assert client.events("history-lost") == []
    assert client.numbers() == [3]


def test_replay_sends_only_what_the_connection_subscribes_to(open_stream):
    now_ms = int(time.time() * 1000)
    stored = [entry(1), entry(2, "user:u2"), entry(3, "*"),
              entry(4, expires_at_ms=now_ms - 1), entry(5, expires_at_ms=now_ms + 60_000),
              entry(6, "news")]
    client = open_stream(plan=ResumePlan((0, 0)), entries=stored)

    client.next()
    client.next()

    assert client.numbers() == [1, 3, 5]
    # The id moves past the entries it was not sent, so a reconnect does not re-read them.
    assert client.parsed.last_event_id == event_id(6)
    assert client.stream.subscription.position.key == key(6)


def test_replay_reads_page_by_page(open_stream, monkeypatch):
    monkeypatch.setattr(event_stream, "REPLAY_PAGE", 2)
    client = open_stream(plan=ResumePlan((0, 0)), entries=[entry(n) for n in range(1, 6)])

    client.next()
    for _ in range(3):
        client.next()

    assert client.numbers() == [1, 2, 3, 4, 5]
    assert client.store.reads == 3


def test_replay_cap_closes_with_replay_limit_and_resuming_continues(open_stream, settings):
    capped = settings.replace(replay_max_messages=3)
    stored = [entry(n) for n in range(1, 7)]
    client = open_stream(plan=ResumePlan((0, 0)), entries=stored, settings=capped)

    client.rest()

    assert client.numbers() == [1, 2, 3]
    (closing,) = client.events("closing")
    assert json.loads(closing.data) == {"reason": CloseReason.REPLAY_LIMIT, "limit": 3,
                                        "retry_ms": REPLAY_CONTINUE_RETRY_MS}
    assert client.parsed.retry == REPLAY_CONTINUE_RETRY_MS
    # The browser reconnects with the id of the last replayed message and gets the rest.
    resumed_from = client.parsed.last_event_id
    plan = plan_resume(resumed_from, NOWHERE, FakeStore(stored).stream_info)
    again = open_stream(plan=plan, entries=stored, settings=capped)
    again.rest()
    assert again.numbers() == [4, 5, 6]


def test_heartbeat_moves_the_position_only_when_it_advanced(open_stream):
    client = open_stream(hub_at=5)
    client.next()
    subscription = client.stream.subscription

    subscription.offer(Heartbeat(Position(EP, *key(5))))
    first = client.next()
    subscription.offer(Heartbeat(Position(EP, *key(9))))
    second = client.next()

    assert first == b": heartbeat\n\n"
    parsed = client.parse(second)
    assert parsed.events == []
    assert parsed.blocks[0].comments == ["heartbeat"]
    assert parsed.last_event_id == event_id(9)
    assert subscription.position.key == key(9)


def test_heartbeat_of_another_epoch_does_not_move_the_position(open_stream):
    client = open_stream(hub_at=5)
    client.next()

    client.stream.subscription.offer(Heartbeat(Position("other", *key(9))))

    assert client.next() == b": heartbeat\n\n"


def test_heartbeat_events_when_asked_for(open_stream):
    client = open_stream(hub_at=5, heartbeat_events=True)
    client.next()
    subscription = client.stream.subscription

    subscription.offer(Heartbeat(Position(EP, *key(5))))
    subscription.offer(Heartbeat(Position(EP, *key(8))))
    client.next()

    beats = client.events("heartbeat")
    assert len(beats) == 2
    assert abs(json.loads(beats[0].data)["time"] - time.time()) < 60
    assert client.parsed.last_event_id == event_id(8)
    ids = [value for name, value in client.parsed.fields if name == "id"]
    assert ids == [event_id(5), event_id(8)]  # connected, then the heartbeat that advanced


def test_close_sends_a_closing_frame_and_ends_the_stream(open_stream):
    client = open_stream(hub_at=1)
    client.next()

    client.stream.subscription.close(CloseReason.KICKED, {"retry_ms": 500})
    client.rest()

    (closing,) = client.events("closing")
    assert json.loads(closing.data) == {"reason": "closed_by_operator", "retry_ms": 500}
    assert client.parsed.retry == 500
    assert client.parsed.complete


def test_a_client_that_hangs_up_ends_its_stream_without_a_final_frame(open_stream,
                                                                      socket_pair):
    server, peer = socket_pair
    client = open_stream(hub_at=1, client_fd=server.fileno())
    client.next()
    reader = gevent.spawn(client.rest)
    gevent.sleep(0.05)
    assert not reader.dead, "an idle stream waits"

    peer.close()
    reader.join(timeout=2)

    assert reader.dead and reader.value == []
    assert client.stream.subscription.closing == CloseReason.CLIENT_GONE


def test_bytes_from_the_client_do_not_end_its_stream(open_stream, socket_pair):
    server, peer = socket_pair
    client = open_stream(hub_at=1, client_fd=server.fileno())
    client.next()
    peer.sendall(b"GET /next HTTP/1.1\r\n")
    gevent.sleep(0.05)
    peer.close()  # the watch stopped at the bytes, so this goes unnoticed until a write
    gevent.sleep(0.05)

    assert client.stream.subscription.closing is None
    client.hub.route([entry(2)])
    client.next()
    assert client.numbers() == [2]


def test_a_closed_stream_stops_watching_its_client(open_stream, socket_pair):
    server, peer = socket_pair
    client = open_stream(hub_at=1, client_fd=server.fileno())
    client.stream.close()
    peer.close()
    gevent.sleep(0.05)

    assert client.stream.subscription.closing is None


def test_closing_during_a_replay_stops_it_where_the_client_can_resume(open_stream,
                                                                      monkeypatch):
    monkeypatch.setattr(event_stream, "REPLAY_PAGE", 2)
    stored = [entry(n) for n in range(1, 9)]
    # The hub had routed everything when the stream opened: a complete replay would
    # move the client to 8, but this one is cut short after its first page.
    client = open_stream(plan=ResumePlan((0, 0)), entries=stored, hub_at=8)
    client.next()  # greeting
    client.next()  # first page
    client.stream.subscription.close(CloseReason.KICKED, {"retry_ms": 500})
    client.rest()

    assert client.numbers() == [1, 2]
    assert client.events("closing")
    assert client.parsed.last_event_id == event_id(2)
    again = open_stream(plan=plan_resume(client.parsed.last_event_id, NOWHERE,
                                         FakeStore(stored).stream_info), entries=stored)
    for _ in range(4):  # greeting, then three pages
        again.next()
    assert again.numbers() == [3, 4, 5, 6, 7, 8]


def test_closing_frame_without_a_retry_hint_uses_sse_retry_ms(open_stream, settings):
    client = open_stream(hub_at=1)
    client.next()

    client.stream.subscription.close(CloseReason.SHUTDOWN)
    client.rest()

    (closing,) = client.events("closing")
    assert json.loads(closing.data) == {"reason": "shutdown",
                                        "retry_ms": settings.sse_retry_ms}


def test_close_wakes_a_stream_waiting_for_messages(open_stream):
    client = open_stream(hub_at=1)
    client.next()
    reader = gevent.spawn(client.rest)
    gevent.idle()  # the reader now waits on its empty queue
    assert not reader.ready()

    client.stream.subscription.close(CloseReason.SHUTDOWN, {"retry_ms": 100})

    reader.join(timeout=2)
    assert reader.successful()
    assert [e.type for e in client.parsed.events] == ["connected", "closing"]


def test_slow_consumer_is_closed_instead_of_queueing_without_bound(open_stream):
    client = open_stream(hub_at=0, queue_size=3)
    client.next()

    client.hub.route([entry(n) for n in range(1, 10)])
    client.rest()

    closing = json.loads(client.events("closing")[0].data)
    assert closing["reason"] == CloseReason.SLOW_CONSUMER
    assert closing["queue_size"] == 3
    assert client.stats.slow_consumers == 1


def test_expired_token_ends_the_stream(open_stream):
    client = open_stream(hub_at=1, expires_at=time.time() - 1)

    client.rest()

    (closing,) = client.events("closing")
    assert json.loads(closing.data)["reason"] == CloseReason.TOKEN_EXPIRED


def test_a_stream_whose_token_is_still_valid_delivers(open_stream):
    client = open_stream(hub_at=0, expires_at=time.time() + 3600)
    client.next()

    client.hub.route([entry(1)])
    client.next()

    assert client.numbers() == [1]


def test_no_message_is_delivered_after_the_token_expired(open_stream):
    client = open_stream(hub_at=0, expires_at=time.time() - 1)
    client.hub.route([entry(1)])

    client.rest()

    assert client.numbers() == []
    assert json.loads(client.events("closing")[0].data)["reason"] == "token_expired"


def test_history_lost_is_told_in_band_before_the_replay(open_stream):
    stored = [entry(n) for n in range(10, 13)]
    plan = plan_resume(event_id(5, "old"), NOWHERE, FakeStore(stored).stream_info)
    client = open_stream(plan=plan, entries=stored)

    client.next()
    client.next()

    types = [e.type for e in client.parsed.events]
    assert types == ["connected", "history-lost", "progress", "progress", "progress"]
    lost = json.loads(client.events("history-lost")[0].data)
    assert lost == {"reason": "stream_reset", "last_event_id": event_id(5, "old"),
                    "resumes_from": event_id(10)}


def test_history_lost_now_names_the_position_the_stream_starts_at(open_stream):
    plan = plan_resume("not-an-id", NOWHERE, never_called)
    client = open_stream(plan=plan, hub_at=7)

    client.next()

    lost = json.loads(client.events("history-lost")[0].data)
    assert lost["resumes_from"] == event_id(7)
    assert client.parsed.last_event_id == event_id(7)


def test_history_lost_is_told_once_even_when_nothing_is_left_to_replay(open_stream):
    stale = event_id(5, "old")
    store = FakeStore([])  # the stream was recreated and is still empty
    plan = plan_resume(stale, NOWHERE, store.stream_info)
    client = open_stream(plan=plan, last_event_id=stale)
    client.next()
    client.stream.subscription.close(CloseReason.SHUTDOWN, {"retry_ms": 100})
    client.rest()
    assert [e.type for e in client.parsed.events] == ["connected", "history-lost", "closing"]

    # The browser reconnects with the last event id it holds.
    again = plan_resume(client.parsed.last_event_id, NOWHERE, store.stream_info)

    assert again.lost is None


def test_epoch_change_while_live_is_told_before_the_new_entries(open_stream):
    client = open_stream(hub_at=3)
    client.next()

    client.hub.route([entry(1, epoch="ep2"), entry(2, epoch="ep2")])
    client.next()

    events = client.parsed.events
    assert [e.type for e in events] == ["connected", "history-lost", "progress", "progress"]
    assert json.loads(events[1].data) == {"reason": "stream_reset",
                                          "last_event_id": event_id(3),
                                          "resumes_from": event_id(1, "ep2")}
    assert client.parsed.last_event_id == event_id(2, "ep2")


def test_redis_failure_during_replay_ends_the_stream_with_a_reason(open_stream, settings):
    client = open_stream(plan=ResumePlan((0, 0)), entries=[entry(1)])
    client.next()
    client.store.fail = True

    client.rest()

    (closing,) = client.events("closing")
    assert json.loads(closing.data) == {"reason": "unavailable",
                                        "retry_ms": settings.sse_retry_ms}


def test_closing_the_stream_unregisters_and_releases_once(open_stream):
    released = []
    client = open_stream(hub_at=1, on_close=released.append)
    client.next()
    stream = client.stream

    stream.close()
    stream.close()

    assert released == [stream]
    assert client.hub.connection_count() == 0
    with pytest.raises(StopIteration):
        next(client.body)


def test_a_stream_never_iterated_still_unregisters_when_closed(open_stream):
    released = []
    client = open_stream(on_close=released.append)

    client.stream.close()

    assert released == [client.stream]
    assert client.hub.connection_count() == 0


def test_a_client_that_stops_reading_is_cut_off(open_stream, settings):
    client = open_stream(hub_at=1, settings=settings.replace(write_timeout_seconds=0.05))
    client.next()  # the server now waits for this chunk to be written

    with pytest.raises(ClientTooSlowError) as caught:
        GeventEvent().wait(5)  # the write never completes

    assert caught.value.errno == errno.EPIPE
    assert isinstance(caught.value, BrokenPipeError)


def test_a_client_that_stops_reading_live_frames_is_cut_off(open_stream, settings):
    client = open_stream(hub_at=1, settings=settings.replace(write_timeout_seconds=0.05))
    client.next()  # the greeting went out
    client.hub.route([entry(2)])
    client.next()  # the server now waits for this live chunk to be written

    with pytest.raises(ClientTooSlowError):
        GeventEvent().wait(5)  # the write never completes


def test_a_live_write_that_completes_in_time_is_not_cut_off(open_stream, settings):
    client = open_stream(hub_at=1, settings=settings.replace(write_timeout_seconds=0.05))
    client.next()
    for n in range(2, 5):
        client.hub.route([entry(n)])
        client.next()
    # As a server does once a write completed: ask for the next chunk, which waits for a
    # frame for several deadlines' worth of time.
    waiting = gevent.spawn(client.next)
    gevent.sleep(0.2)
    client.hub.route([entry(5)])
    waiting.join(2)

    assert waiting.successful(), waiting.exception
    assert client.numbers() == [2, 3, 4, 5]


def test_a_backlog_goes_out_in_bounded_writes_in_order(open_stream):
    client = open_stream(hub_at=0, queue_size=5000)
    client.next()
    padding = b"x" * 3000
    big = [Entry(T0 + n, 0, EP, ("user:u1",), "progress", b'{"n":%d,"p":"%s"}' % (n, padding),
                 0) for n in range(1, 201)]
    client.hub.route(big)

    chunks = [client.next() for _ in range(10)]

    assert all(len(chunk) < WRITE_CHUNK_BYTES + 4000 for chunk in chunks)
    assert client.numbers() == list(range(1, 201))
    assert client.stream.subscription.queue.queue == []


def test_a_replay_reads_at_most_replay_max_entries_then_the_client_continues(
        open_stream, settings, monkeypatch):
    # Most of the stream is for other users: a resume from its start reads far more
    # entries than it sends. It stops after REPLAY_MAX_ENTRIES entries read, with the
    # client's position moved past them, so each connection costs a bounded amount.
    monkeypatch.setattr(event_stream, "REPLAY_PAGE", 4)
    capped = settings.replace(replay_max_entries=8)
    stored = [entry(n, "user:u1" if n % 10 == 0 else "user:other")
              for n in range(1, 31)]
    client = open_stream(plan=ResumePlan((0, 0)), entries=stored, settings=capped)

    client.rest()

    assert client.numbers() == []
    assert client.store.reads == 2  # two pages of four: eight entries read
    (closing,) = client.events("closing")
    assert json.loads(closing.data)["reason"] == CloseReason.REPLAY_LIMIT
    assert client.parsed.last_event_id == event_id(8)
    numbers = []
    resumed_from = client.parsed.last_event_id
    for _ in range(2):  # 9-16, 17-24: each stopped at the cap
        plan = plan_resume(resumed_from, NOWHERE, FakeStore(stored).stream_info)
        again = open_stream(plan=plan, entries=stored, settings=capped)
        again.rest()
        numbers += again.numbers()
        resumed_from = again.parsed.last_event_id
    assert numbers == [10, 20]
    assert resumed_from == event_id(24)
    plan = plan_resume(resumed_from, NOWHERE, FakeStore(stored).stream_info)
    last = open_stream(plan=plan, entries=stored, settings=capped)
    last.next()  # connected
    last.next()  # 25-28
    last.next()  # 29-30, and the replay is complete: live from here
    assert last.numbers() == [30]
