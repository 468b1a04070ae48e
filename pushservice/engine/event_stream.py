"""One client's text/event-stream response: greeting, replay of what was missed, live
frames, and a final frame that says why the stream ended.

Resuming follows the order that cannot lose or double a message at the seam: the
connection is registered for live entries first (web/streams.py does that before it
builds the event stream), the replay runs from the client's position up to the newest
entry, then live entries that the replay already covered are dropped (they are not
newer than the client's position). When the client's position is no longer kept, a
``history-lost`` event says so in-band (browsers cannot read response headers) and names
where history resumes.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent import Timeout
from gevent.queue import Empty

from ..errors import StoreUnavailableError
from ..settings import Settings
from ..store import AckEntry, Entry, MessageStore, StreamInfo
from .confirmations import CLAIM_PAGE, Confirmations, Redelivered
from .hangup import hung_up
from .position import Position, parse_event_id
from .recent import RecentHistory
from .sse import HEARTBEAT_COMMENT, encode_json_frame, encode_position, encode_retry, message_frame
from .stats import WorkerStats
from .subscription import WAKE, CloseReason, Heartbeat, Shed, Subscription
from .topics import matches

log = logging.getLogger(__name__)

_EV_READ = 1  # libev's event mask for a readable file descriptor

REPLAY_PAGE = 500
# Frames joined into one write at most (bytes); a backlog goes out in several writes.
WRITE_CHUNK_BYTES = 64 * 1024
# The reconnect delay sent when a replay stops at its cap: continue right away.
REPLAY_CONTINUE_RETRY_MS = 10


class ClientTooSlowError(BrokenPipeError):
    """A write did not complete within WRITE_TIMEOUT_SECONDS; the connection is dropped.

    A BrokenPipeError with errno EPIPE, which gunicorn and gevent treat as a client that
    went away (logged at debug), not as a server error.
    """

    def __init__(self) -> None:
        super().__init__(errno.EPIPE, "client did not read its stream in time")


@dataclass(frozen=True)
class ResumePlan:
    """Where a connection's history starts.

    ``replay_after``: replay entries after this (ms, seq) key of ``epoch``; None means
    live only. ``lost``: the payload of the ``history-lost`` event, or None when nothing
    is known to be lost. ``from_memory``: the hub's recent history held the position when
    planned (replay without Redis, if it still does). ``last_event_id``: what the client
    sent.
    """

    replay_after: tuple[int, int] | None
    lost: dict[str, Any] | None = None
    epoch: str | None = None
    from_memory: bool = False
    last_event_id: str | None = field(default=None, compare=False)


def plan_resume(last_event_id: str | None, recent: RecentHistory,
                info_source: Callable[[], StreamInfo]) -> ResumePlan:
    """Decide how to resume from ``last_event_id`` (None: a fresh connection).

    A position inside the hub's ``recent`` history needs nothing from Redis. Otherwise
    ``info_source`` is called once, to learn what the stream still holds; it may raise
    StoreUnavailableError.
    """
    if last_event_id is None:
        return ResumePlan(None)
    position = parse_event_id(last_event_id)
    if position is None:
        return ResumePlan(None, _lost("malformed_last_event_id", last_event_id, "now"),
                          last_event_id=last_event_id)
    key = position.key
    if recent.covers(position.epoch, key):
        return ResumePlan(key, epoch=position.epoch, from_memory=True,
                          last_event_id=last_event_id)
    info = info_source()
    if info.epoch != position.epoch:
        # The stream was recreated (or Redis lost its data): everything it holds now is
        # new to this client, and what came between is gone.
        return ResumePlan((0, 0), _lost("stream_reset", last_event_id, _oldest(info)),
                          epoch=info.epoch, last_event_id=last_event_id)
    if key > (info.last_generated or (0, 0)):
        return ResumePlan(None, _lost("unknown_position", last_event_id, "now"),
                          last_event_id=last_event_id)
    lost = None
    if _trimmed_after(key, info):
        lost = _lost("history_trimmed", last_event_id, _oldest(info))
    # Trimmed or not, what follows ``key`` is what the stream still holds after it.
    return ResumePlan(key, lost, epoch=position.epoch, last_event_id=last_event_id)


def _trimmed_after(key: tuple[int, int], info: StreamInfo) -> bool:
    """Whether an entry newer than ``key`` was removed from the stream.

    Trims remove the oldest entries, so the question is whether one of them was newer
    than ``key``: exactly when the id written just before the first kept entry is. Redis
    keeps no record of trims (on 7.x ``max-deleted-entry-id`` moves only for XDEL), so
    each entry carries that id itself (``p``); the Redis-reported fields only add what
    they prove.
    """
    if info.max_deleted is not None and info.max_deleted > key:
        return True  # XDEL removed a newer entry (7.0+)
    if info.first is None:
        # Nothing is kept: lost whatever was written after ``key``.
        return info.last_generated is not None and info.last_generated > key
    if key >= info.first:
        return False
    if info.entries_added is not None and info.entries_added == info.length:
        return False  # nothing was ever removed (7.0+)
    if info.first_predecessor is not None:
        return info.first_predecessor > key
    return True  # an entry written before ``p`` existed: assume the worst, never a gap


def _oldest(info: StreamInfo) -> str:
    if info.first is None or info.epoch is None:
        return "now"
    return Position(info.epoch, *info.first).event_id


def _lost(reason: str, last_event_id: str, resumes_from: str) -> dict[str, Any]:
    return {"reason": reason, "last_event_id": last_event_id, "resumes_from": resumes_from}


# Where a resume finds no recent history and asks Redis.
_NO_HISTORY = RecentHistory(0, 0)


def _pages(entries: list[Entry]) -> Iterator[tuple[None, list[Entry]]]:
    for start in range(0, len(entries), REPLAY_PAGE):
        yield None, entries[start:start + REPLAY_PAGE]


@dataclass(frozen=True)
class StreamContext:
    """What every event stream of a worker shares: one object, so that each of thousands
    of streams carries a single reference to it. ``on_close(stream)`` runs once when a
    stream ends (it unregisters and releases the connection)."""

    settings: Settings
    store: MessageStore
    stats: WorkerStats
    recent: RecentHistory
    on_close: Callable[[EventStream], None]
    confirmations: Confirmations | None = None


class EventStream:
    """The response body of one SSE connection (the WSGI iterable), and its end.

    The connection is registered with the hub before it is built; ``start`` is the hub's
    position at that moment. ``close()`` ends it and calls the context's ``on_close``,
    whether or not the body was ever iterated. ``client_fd``, when given, is watched for
    the client hanging up. A stream closed for a shutdown also closes its connection
    (``close_connection``), so that the client reconnects to a worker that stays.
    """

    __slots__ = ("_acks", "_body", "_client_id", "_closed", "_delivered", "_hangup_watch",
                 "_newest", "_redelivered", "_replayed_acks", "close_connection", "context",
                 "expires_at", "heartbeat_events", "plan", "replayed", "scanned", "start",
                 "subscription")

    def __init__(self, context: StreamContext, subscription: Subscription, start: Position,
                 plan: ResumePlan, heartbeat_events: bool = False,
                 expires_at: float | None = None, client_fd: int | None = None) -> None:
        self.context = context
        self.subscription = subscription
        self.start = start
        self.plan = plan
        self.heartbeat_events = heartbeat_events
        self.expires_at = expires_at
        self.replayed = 0
        self.scanned = 0
        # Set by the server side when it can: close the client's connection once this
        # response ends, instead of keeping it alive for the client's next request.
        self.close_connection: Callable[[], None] | None = None
        # Where the client stands: after what it sent when it resumes (never behind it,
        # whatever this worker's reader has read), else where the hub stands.
        position = subscription.position
        position.epoch = plan.epoch or start.epoch
        if plan.replay_after is not None:
            position.key = plan.replay_after
        # The Last-Event-ID the client holds now, as far as this stream knows.
        self._client_id = plan.last_event_id
        self._body: Iterator[bytes] | None = None
        self._closed = False
        # What the chunk being written carries: message frames, and the newest entry.
        self._delivered = 0
        self._newest: Entry | None = None
        # Delivery confirmation: ids of such messages in the chunk being written (None
        # when there are none), how many of them were redeliveries, and the ids the
        # replay sent (the inbox need not send them again).
        self._acks: list[str] | None = None
        self._redelivered = 0
        self._replayed_acks: list[str] | None = None
        # The client's socket, watched for a hang-up (hangup.py): a libev watcher and
        # an argument tuple, the least a connection can carry for it.
        self._hangup_watch = None
        if client_fd is not None:
            watch = gevent.get_hub().loop.io(client_fd, _EV_READ)
            watch.start(EventStream._client_readable, self)
            self._hangup_watch = watch

    @property
    def settings(self) -> Settings:
        return self.context.settings

    # -- the WSGI iterable --------------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        if self._body is None:
            self._body = self._stream()
        return self._body

    def close(self) -> None:
        """End the stream: stop the body and let the connection go. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_hangup_watch()  # before the server closes the socket and its fd is reused
        if self._body is not None:
            self._body.close()
        self.context.on_close(self)

    def _client_readable(self) -> None:
        """Runs in the event loop (it must not block) when the client's socket turned
        readable: a hang-up ends the stream, with no final frame."""
        watch = self._hangup_watch
        if watch is None:
            return
        gone = hung_up(watch.fd)
        if gone is None:
            return  # a spurious wake-up: keep watching
        # Either way stop: the watch is level-triggered, and bytes a client sends after
        # its request (TLS records, a pipelined request) stay unread.
        self._stop_hangup_watch()
        if gone:
            self.subscription.close(CloseReason.CLIENT_GONE)

    def _stop_hangup_watch(self) -> None:
        watch = self._hangup_watch
        if watch is not None:
            self._hangup_watch = None
            watch.stop()
            watch.close()

    def _stream(self) -> Iterator[bytes]:
        """Everything the client receives, each chunk under a write deadline: a client
        that stops reading is cut off after WRITE_TIMEOUT_SECONDS instead of pinning its
        greenlet forever.

        The live loop runs in this one generator, not in nested ones: every level of
        nesting would be saved with the greenlet's stack while it waits, for each of
        thousands of idle connections.
        """
        subscription = self.subscription
        deadline = Timeout(self.settings.write_timeout_seconds, ClientTooSlowError())
        try:
            try:
                for chunk in self._opening():
                    deadline.start()
                    yield chunk
                    deadline.cancel()
            except StoreUnavailableError as exc:
                log.warning("stream %s ends: %s", subscription.id, exc)
                subscription.close("unavailable", {"retry_ms": self.settings.sse_retry_ms})
            queue = subscription.queue
            while True:
                if self.expires_at is not None and time.time() >= self.expires_at:
                    self._token_expired()
                if subscription.closing is not None:
                    if subscription.closing == CloseReason.SHUTDOWN and \
                            self.close_connection is not None:
                        # Not back to this worker over the same kept-alive connection.
                        self.close_connection()
                    if subscription.closing != CloseReason.CLIENT_GONE:
                        deadline.start()
                        yield self._final_frame(subscription.closing,
                                                subscription.close_detail)
                        deadline.cancel()
                    return
                try:
                    items = queue.take_all(timeout=self._time_left())
                except Empty:
                    self._token_expired()
                    continue
                chunk = self._live_chunk(items)
                if chunk:
                    deadline.start()
                    yield chunk
                    deadline.cancel()
                    self._written()
        finally:
            deadline.close()

    # -- what the client receives -------------------------------------------------------

    def _opening(self) -> Iterator[bytes]:
        """The greeting, then what the client missed."""
        subscription = self.subscription
        plan = self.plan
        if plan.from_memory and not self.context.recent.covers(plan.epoch, plan.replay_after):
            # The hub's recent history moved on since the plan: ask Redis, as for any
            # resume from further back.
            plan = self.plan = plan_resume(plan.last_event_id, _NO_HISTORY,
                                           self.context.store.stream_info)
            subscription.position.epoch = plan.epoch or self.start.epoch
            if plan.replay_after is not None:
                subscription.position.key = plan.replay_after
        greeting = {"connection_id": subscription.id,
                    "instance": self.settings.instance_name, "worker": os.getpid(),
                    "topics": list(subscription.topics),
                    "heartbeat_interval": self.settings.heartbeat_interval}
        head = [encode_retry(self.settings.sse_retry_ms)]
        if plan.replay_after is None:
            # Live only: the client has everything up to the hub's position, and a
            # reconnect from here must not miss what comes next.
            subscription.position.key = self.start.key
            greeting["last_event_id"] = self.start.event_id
            head.append(encode_json_frame(greeting, "connected", self.start.event_id))
        else:
            # The client's own position, so that even a page that lost its
            # EventSource's id (a new EventSource with ?last_event_id=) holds it again.
            reset = plan.lost is not None and plan.lost["reason"] == "stream_reset"
            resume_id = None if reset else subscription.position.event_id
            if resume_id is not None:
                greeting["last_event_id"] = resume_id
                self._client_id = resume_id
            head.append(encode_json_frame(greeting, "connected", resume_id))
        if plan.lost is not None:
            head.append(self._history_lost(dict(plan.lost)))
        yield b"".join(head)
        if plan.replay_after is not None:
            complete = yield from self._replay()
            moved = self._position_after_replay(complete)
            if moved is not None:
                yield moved
        if subscription.ack_user is not None and self.context.confirmations is not None:
            yield from self._redeliver_inbox()

    def _redeliver_inbox(self) -> Iterator[bytes]:
        """What waits in the user's inbox for acknowledgement and is not on its way to
        the client already (replayed, or newer than its position: it arrives live),
        page by page. Without Redis the stream goes on without it: the next connection,
        or the message's timeout, brings it."""
        subscription = self.subscription
        confirmations = self.context.confirmations
        stats = self.context.stats
        sent, self._replayed_acks = self._replayed_acks or (), None
        # Let what waits to run go first (the registry's record of this connection, which
        # operators and the per-user limit read): the inbox can wait a turn.
        gevent.sleep(0)
        while subscription.closing is None:
            try:
                page = confirmations.redeliveries(subscription, subscription.position, sent)
            except StoreUnavailableError as exc:
                log.info("stream %s: the inbox waits for the next connection: %s",
                         subscription.id, exc)
                return
            if not page:
                return
            named = subscription.named
            yield b"".join(item.frame(named) for item in page)
            confirmations.written(subscription, [item.message_id for item in page])
            subscription.frames_sent += len(page)
            stats.delivered += len(page)
            stats.redelivered_on_connect += len(page)
            if len(page) < CLAIM_PAGE:
                return

    def _history_lost(self, lost: dict[str, Any]) -> bytes:
        self.context.stats.note_history_lost(lost["reason"])
        if lost["resumes_from"] == "now":
            lost["resumes_from"] = self.start.event_id
        return encode_json_frame(lost, "history-lost")

    def _replay(self) -> Generator[bytes, None, bool]:
        """Send what the client missed, page by page: from the hub's recent history when
        it still holds the client's position, else from Redis. Returns False when it
        stopped early, at REPLAY_MAX_MESSAGES or because the stream is closing (the
        client reconnects to continue), True when complete."""
        plan = self.plan
        subscription = self.subscription
        stats = self.context.stats
        recent = self.context.recent
        named = subscription.named
        limit = self.settings.replay_max_messages
        # Entries read, sent or not: what a resume from far back (or from a foreign id,
        # which replays a whole stream) may cost the worker per request.
        scan_limit = self.settings.replay_max_entries
        subscribed = frozenset(subscription.topics)
        if plan.from_memory and recent.covers(plan.epoch, plan.replay_after):
            if not recent.touched_after(plan.replay_after, subscribed):
                # Nothing new for this client: only its position moves on.
                yield from self._skip_to(recent.newest_entry, plan.replay_after)
                return True
            pages = _pages(recent.after(plan.replay_after))
        else:
            pages = self._pages_from_redis(plan.replay_after, verify=plan.lost is None)
        for head, entries in pages:
            if subscription.closing is not None:
                return False
            now_ms = time.time() * 1000
            frames: list[bytes] = [head] if head else []
            replayed = 0
            # What the user acknowledged is never delivered to it again.
            acknowledged = self._acknowledged_in(entries)
            acks: list[str] = []
            for entry in entries:
                last = entry
                sent = not entry.expired(now_ms) and matches(entry.topics, subscribed)
                if sent and type(entry) is AckEntry:
                    sent = entry.ack_id not in acknowledged
                    if sent:
                        acks.append(entry.ack_id)
                if sent:
                    frames.append(message_frame(entry, named))
                    replayed += 1
                    self.replayed += 1
                    if self.replayed >= limit:
                        break
            self._stand_at(last)
            if not sent:
                # Move the client's Last-Event-ID past the entries it was not sent.
                frames.append(encode_position(last.event_id, "replay"))
            yield b"".join(frames)
            if acks:
                self._replayed_acks = (self._replayed_acks or []) + acks
                if self.context.confirmations is not None:
                    self.context.confirmations.written(subscription, acks)
            subscription.frames_sent += replayed
            stats.replayed += replayed
            stats.delivered += replayed
            self.scanned += len(entries)
            if self.replayed >= limit or self.scanned >= scan_limit:
                # The client's position has moved to here: it comes back to continue.
                subscription.close(CloseReason.REPLAY_LIMIT,
                                   {"retry_ms": REPLAY_CONTINUE_RETRY_MS, "limit": limit})
                return False
            gevent.sleep(0)  # a long replay must not starve the worker's other streams
        return True

    def _skip_to(self, newest: Entry | None, after: tuple[int, int]) -> Iterator[bytes]:
        """Move the client past every kept entry, none of which is for it."""
        if newest is None or newest.key <= after:
            return
        self._stand_at(newest)
        yield encode_position(newest.event_id, "replay")

    def _stand_at(self, entry: Entry) -> None:
        """The replay has taken the client up to ``entry``: its position, and the
        Last-Event-ID it holds once what is being written arrives."""
        position = self.subscription.position
        position.key = entry.key
        position.epoch = entry.epoch
        self._client_id = entry.event_id

    def _acknowledged_in(self, entries: list[Entry]) -> set[str] | frozenset[str]:
        """The ids of confirmation-requiring messages among ``entries`` that this
        stream's user acknowledged (a round trip to Redis when there are any)."""
        subscription = self.subscription
        confirmations = self.context.confirmations
        if subscription.ack_user is None or confirmations is None:
            return frozenset()
        topic = f"user:{subscription.ack_user}"
        ids = [entry.ack_id for entry in entries
               if type(entry) is AckEntry and topic in entry.topics]
        return confirmations.acknowledged(subscription, ids) if ids else frozenset()

    def _pages_from_redis(self, after: tuple[int, int],
                          verify: bool) -> Iterator[tuple[bytes | None, list[Entry]]]:
        """Pages of entries after ``after`` from the stream, each with a frame to send
        before it (or None). With ``verify``, the first page is checked against what
        the client holds, in case the stream changed since the resume was planned: a
        history-lost frame comes first when it was recreated (read from its start) or
        when a trim removed entries the client never saw (each entry names the one
        written before it)."""
        key = after
        head = None
        while True:
            entries = self.context.store.read_range(key, REPLAY_PAGE)
            if not entries:
                return
            if verify:
                verify = False
                first = entries[0]
                client_id = Position(self.subscription.position.epoch, *key).event_id
                if first.epoch != self.subscription.position.epoch:
                    if key != (0, 0):
                        key = (0, 0)
                        entries = self.context.store.read_range(key, REPLAY_PAGE)
                    head = self._history_lost(
                        _lost("stream_reset", client_id, entries[0].event_id))
                elif first.previous is not None and first.previous > key:
                    head = self._history_lost(
                        _lost("history_trimmed", client_id, first.event_id))
            yield head, entries
            head = None
            if len(entries) < REPLAY_PAGE:
                return
            key = entries[-1].key

    def _live_chunk(self, items: list[object]) -> bytes | None:
        """What was waiting in the queue as one chunk: one write however many frames
        were waiting, up to WRITE_CHUNK_BYTES (the rest goes back to the queue for the
        next write, so a backlog never becomes one huge copy)."""
        subscription = self.subscription
        position = subscription.position
        named = subscription.named
        frames: list[bytes] = []
        size = 0
        newest: Entry | None = None
        delivered = 0
        for index, item in enumerate(items):
            if type(item) is Entry:
                if item.epoch != position.epoch:
                    frames.append(self._epoch_changed(item))
                key = (item.ms, item.seq)
                if key > position.key:  # else: already replayed
                    frame = message_frame(item, named)
                    frames.append(frame)
                    size += len(frame)
                    position.key = key
                    newest = item
                    delivered += 1
            elif type(item) is Heartbeat:
                frames.append(self._heartbeat(item.position))
            elif type(item) is AckEntry:
                # As an Entry above (a branch of its own, so that plain entries pay
                # nothing for it), and noted for its delivery record once written.
                if item.epoch != position.epoch:
                    frames.append(self._epoch_changed(item))
                key = (item.ms, item.seq)
                if key > position.key:
                    frame = message_frame(item, named)
                    frames.append(frame)
                    size += len(frame)
                    position.key = key
                    newest = item
                    delivered += 1
                    self._note_ack(item.ack_id)
            elif type(item) is Redelivered:
                frame = item.frame(named)
                frames.append(frame)
                size += len(frame)
                self._note_ack(item.message_id)
                self._redelivered += 1
            elif type(item) is Shed:
                frames.append(self._shed(item))
            elif item is not WAKE:
                log.error("unexpected item in stream queue: %r", item)
            if size >= WRITE_CHUNK_BYTES:
                subscription.queue.put_back(items[index + 1:])
                break
        self._delivered = delivered
        self._newest = newest
        return b"".join(frames) if frames else None

    def _note_ack(self, message_id: str) -> None:
        if self._acks is None:
            self._acks = []
        self._acks.append(message_id)

    def _written_acks(self) -> None:
        """The chunk carried confirmation-requiring messages: have them recorded."""
        acks, self._acks = self._acks, None
        redelivered, self._redelivered = self._redelivered, 0
        if self.context.confirmations is not None:
            self.context.confirmations.written(self.subscription, acks)
        if redelivered:
            self.subscription.frames_sent += redelivered
            stats = self.context.stats
            stats.delivered += redelivered
            stats.redelivered_on_timeout += redelivered

    def _written(self) -> None:
        """The chunk went out: count its frames and how long they took since Redis took
        the newest of them in."""
        if self._acks is not None:
            self._written_acks()
        if self._newest is not None:
            delivered = self._delivered
            self.subscription.frames_sent += delivered
            stats = self.context.stats
            stats.delivered += delivered
            stats.observe_latency(time.time() - self._newest.ms / 1000)
            self._newest = None

    # -- individual frames --------------------------------------------------------------

    def _position_after_replay(self, complete: bool) -> bytes | None:
        """After a replay the client holds everything up to where it stopped or, when it
        is ``complete``, up to the later of that and the hub's position at registration
        (the replay read past it). Make that its Last-Event-ID, unless it already is, so
        that a reconnect neither repeats a history-lost nor rescans what was replayed."""
        position = self.subscription.position
        if complete and self.start.epoch == position.epoch and self.start.key > position.key:
            position.key = self.start.key
        current = position.event_id
        if current == self._client_id:
            return None
        self._client_id = current
        return encode_position(current, "resume")

    def _heartbeat(self, hub_at: Position) -> bytes:
        position = self.subscription.position
        advanced = hub_at.epoch == position.epoch and hub_at.key > position.key
        if advanced:
            position.key = hub_at.key
        if self.heartbeat_events:
            return encode_json_frame({"time": time.time()}, "heartbeat",
                                     hub_at.event_id if advanced else None)
        if advanced:
            return encode_position(hub_at.event_id)
        return HEARTBEAT_COMMENT

    def _shed(self, shed: Shed) -> bytes:
        """Tell the client that low-priority messages were let go of to make room in its
        full mailbox (it continues from its position; a resume from an earlier one
        replays them)."""
        self.context.stats.shed_low += shed.count
        at = self.subscription.position.event_id
        return self._history_lost({
            "reason": "low_priority_shed", "last_event_id": at, "resumes_from": at,
            "dropped": shed.count, "dropped_event_ids": [shed.first_id, shed.last_id]})

    def _epoch_changed(self, entry: Entry) -> bytes:
        position = self.subscription.position
        lost = _lost("stream_reset", position.event_id, entry.event_id)
        position.epoch = entry.epoch
        position.key = (0, 0)
        self.context.stats.note_history_lost("stream_reset")
        return encode_json_frame(lost, "history-lost")

    def _final_frame(self, reason: str, detail: dict[str, Any]) -> bytes:
        retry_ms = int(detail.get("retry_ms", self.settings.sse_retry_ms))
        payload = {"reason": reason, **detail, "retry_ms": retry_ms}
        return encode_json_frame(payload, "closing", retry_ms=retry_ms)

    def _token_expired(self) -> None:
        self.subscription.close(CloseReason.TOKEN_EXPIRED, {
            "retry_ms": self.settings.sse_retry_ms,
            "message": "The token expired: reconnect with a fresh token (and Last-Event-ID).",
        })

    def _time_left(self) -> float | None:
        if self.expires_at is None:
            return None
        return max(0.0, self.expires_at - time.time())
