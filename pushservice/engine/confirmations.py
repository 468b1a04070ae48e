"""This worker's part of delivery confirmation (messages with ``metadata.require_ack``).

- It counts what its streams wrote of such messages, and records it in Redis in the
  background, a round trip every FLUSH_SECONDS at most: how many connections each
  message reached, when each user first got it, and when the user gets it again unless
  it acknowledges (its timeout).
- A user's new stream gets what waits in the user's inbox: ``redeliveries`` (concurrent
  streams share one round trip).
- Redeliveries whose time came reach the user's open streams through the control channel
  (``deliver``): the worker that runs the schedules (ops/acks.py) sends them to every
  worker, and each offers them to its own streams of that user.
- Resumes skip what the user acknowledged already (``acknowledged``).

A message delivered again is a ``Redelivered`` mailbox item: its frame has no ``id:``
(it does not move the client's position in the stream) and its ``metadata.retry_count``
is raised by the number of redeliveries it has had.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from gevent.event import Event

from ..background import Loop
from ..errors import StoreUnavailableError
from ..group_commit import CallTimedOutError, GroupCommit
from ..settings import Settings
from ..store.acks import AckStore, Redelivery
from .position import ClientPosition
from .sse import encode_unpositioned_frame
from .stats import WorkerStats
from .subscription import Subscription

log = logging.getLogger(__name__)

# Writes are recorded at most this often (seconds): the status lags by as much.
FLUSH_SECONDS = 0.2
# (message, user) pairs waiting to be recorded at most; beyond, the oldest counts go.
MAX_PENDING_WRITES = 100_000
# Redeliveries a new stream claims per round trip.
CLAIM_PAGE = 100


class Redelivered:
    """A confirmation-requiring message delivered again to ``user``'s streams. Its
    frames are encoded once and shared by the streams it goes to."""

    __slots__ = ("body", "event_id", "message_id", "named_frame", "plain_frame", "priority",
                 "type", "user")

    def __init__(self, user: str, message_id: str, event_id: str, type_: str, body: bytes,
                 priority: str) -> None:
        self.user = user
        self.message_id = message_id
        self.event_id = event_id
        self.type = type_
        self.body = body
        self.priority = priority
        self.named_frame: bytes | None = None
        self.plain_frame: bytes | None = None

    @classmethod
    def of(cls, redelivery: Redelivery) -> Redelivered:
        """A redelivery as the store claimed it, its retry count raised."""
        return cls(redelivery.user, redelivery.message_id, redelivery.event_id,
                   redelivery.type, with_retry_count(redelivery.body, redelivery.retries),
                   redelivery.priority)

    def frame(self, named: bool) -> bytes:
        if named:
            if self.named_frame is None:
                self.named_frame = encode_unpositioned_frame(self.type, self.body)
            return self.named_frame
        if self.plain_frame is None:
            self.plain_frame = encode_unpositioned_frame(None, self.body)
        return self.plain_frame


def with_retry_count(body: bytes, redeliveries: int) -> bytes:
    """The stored message with ``metadata.retry_count`` raised by ``redeliveries``."""
    message = orjson.loads(body)
    metadata = message.get("metadata")
    if isinstance(metadata, dict):
        metadata["retry_count"] = int(metadata.get("retry_count", 0)) + redeliveries
    return orjson.dumps(message)


class Confirmations:
    """Delivery confirmation in one worker: counting writes, a new stream's inbox, timed
    redeliveries to local streams. ``start()`` in the worker process after fork."""

    def __init__(self, settings: Settings, store: AckStore, stats: WorkerStats) -> None:
        self.settings = settings
        self.store = store
        self.stats = stats
        self._writes: dict[tuple[str, str], int] = {}
        self._wake = Event()
        self._loop = Loop(self._flush_round, "delivery records")
        # Streams of each user (their own user stream) in this worker.
        self._streams: dict[str, set[Subscription]] = {}
        self._claims = GroupCommit(self._claim)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        try:
            self.flush()
        except Exception:  # best effort on the way out
            log.debug("delivery records not written at stop", exc_info=True)

    # -- streams -----------------------------------------------------------------------------

    def register(self, subscription: Subscription) -> None:
        user = subscription.ack_user
        if user is not None:
            self._streams.setdefault(user, set()).add(subscription)

    def unregister(self, subscription: Subscription) -> None:
        user = subscription.ack_user
        streams = self._streams.get(user) if user is not None else None
        if streams is not None:
            streams.discard(subscription)
            if not streams:
                del self._streams[user]

    # -- writes ------------------------------------------------------------------------------

    def written(self, subscription: Subscription, message_ids: Iterable[str]) -> None:
        """``subscription`` wrote these confirmation-requiring messages to its client."""
        user = subscription.ack_user or ""
        writes = self._writes
        for message_id in message_ids:
            key = (message_id, user)
            writes[key] = writes.get(key, 0) + 1
        if len(writes) > MAX_PENDING_WRITES:
            log.warning("dropping %d delivery counts: Redis has not taken them", len(writes))
            writes.clear()
        self._wake.set()

    def _flush_round(self) -> float:
        self._wake.wait()
        self._wake.clear()
        self.flush()
        return FLUSH_SECONDS  # what arrives meanwhile goes in the next round trip

    def flush(self) -> None:
        """Record the writes counted so far (kept for the next try when Redis fails)."""
        writes, self._writes = self._writes, {}
        if not writes:
            return
        try:
            self.store.record_writes(writes, int(time.time() * 1000))
        except Exception:
            for key, count in writes.items():
                self._writes[key] = self._writes.get(key, 0) + count
            self._wake.set()
            raise

    # -- what a stream gets again -------------------------------------------------------------

    def redeliveries(self, subscription: Subscription, position: ClientPosition,
                     sent: Sequence[str]) -> list[Redelivered]:
        """A page (at most CLAIM_PAGE) of what waits in the stream's user's inbox and is
        not newer than ``position`` (the client gets those live); ``sent`` are ids the
        stream delivered already (its replay). Each is counted as a redelivery. Empty
        when nothing waits; StoreUnavailableError when Redis does not answer in time."""
        user = subscription.ack_user
        if user is None:
            return []
        claim = (user, position.epoch, position.key, tuple(sent), CLAIM_PAGE)
        try:
            (claimed,) = self._claims.submit(
                [claim], timeout=self.settings.request_timeout_seconds)
        except CallTimedOutError:
            raise StoreUnavailableError("Redis did not answer within "
                                        "REQUEST_TIMEOUT_SECONDS.", retry_after=2) from None
        return [Redelivered.of(redelivery) for redelivery in claimed]

    def _claim(self, claims: list[tuple], deadline: float | None) -> list[list[Redelivery]]:
        return self.store.claim_inbox(claims, int(time.time() * 1000))

    def acknowledged(self, subscription: Subscription, message_ids: Sequence[str]) -> set[str]:
        """Those of ``message_ids`` that the stream's user has acknowledged."""
        user = subscription.ack_user
        if user is None or not message_ids:
            return set()
        return self.store.acknowledged_by(user, message_ids)

    def deliver(self, items: Sequence[dict[str, Any]]) -> int:
        """Offer redeliveries whose time came (from the control channel) to this worker's
        streams of their users; returns how many streams got one."""
        offered = 0
        for item in items:
            try:
                streams = self._streams.get(str(item["user"]))
                if not streams:
                    continue
                redelivered = Redelivered(str(item["user"]), str(item["id"]),
                                          str(item["event_id"]), str(item["type"]),
                                          str(item["body"]).encode(), str(item["priority"]))
            except (KeyError, TypeError):
                log.warning("malformed redelivery on the control channel")
                continue
            for subscription in list(streams):
                if subscription.closing is None:
                    subscription.offer(redelivered)
                    offered += 1
        return offered
