"""Proof that messages still go through this worker's pipeline.

An open socket is not a working pipeline: after a Redis failover a reader still attached
to the demoted primary completes empty reads for ever, and its health used to stay green.
So each worker publishes a small probe into the stream every HEALTH_PROBE_SECONDS and
notes when its own reader routes it back. A worker that has not seen one of its own probes
for two intervals is unhealthy (``/health`` answers 503) and its reader reconnects.

Probes reach no client: their type is one no published message can have, and their topic
one no connection can subscribe to (names hold no ``~``); replays skip them as they skip
other topics. They count in the shared ``probes`` counter, not in ``published``.
"""

from __future__ import annotations

import logging
import secrets
import time

import orjson

from ..background import Loop
from ..message import Message
from ..settings import Settings
from ..store import Entry, MessageStore
from .reader import PROBE_TYPE, Reader

log = logging.getLogger(__name__)

PROBE_TOPIC = "~probe"
# How long a probe is kept: long enough for any reader to route it, no longer.
PROBE_TTL_SECONDS = 60


class DeliveryProbe:
    """This worker's probes: sent by a background loop, seen by ``reader``."""

    def __init__(self, settings: Settings, store: MessageStore, reader: Reader) -> None:
        self.interval = settings.health_probe_seconds
        self.timeout = settings.request_timeout_seconds
        self.store = store
        self.reader = reader
        self._tag = secrets.token_hex(8)
        self._tag_bytes = self._tag.encode()
        self._sequence = 0
        self.started_at: float | None = None
        self.last_seen_at: float | None = None
        self.round_trip_seconds: float | None = None
        self._sent_at: dict[int, float] = {}
        self._loop = Loop(self._send, "delivery probe")
        reader.on_probe = self.seen

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def start(self) -> None:
        if self.enabled and self._loop.start():
            self.started_at = time.time()

    def stop(self) -> None:
        self._loop.stop()

    def age(self, now: float | None = None) -> float | None:
        """Seconds since this worker last saw one of its probes come through (since it
        started, before the first); None when probes are off or not started."""
        if not self.enabled or self.started_at is None:
            return None
        now = time.time() if now is None else now
        return now - (self.last_seen_at or self.started_at)

    def healthy(self, now: float | None = None) -> bool:
        """False once no probe of this worker came through for two intervals."""
        age = self.age(now)
        return age is None or age <= 2 * self.interval

    def seen(self, entry: Entry) -> None:
        """The reader routed a probe (any worker's): note ours."""
        if self._tag_bytes not in entry.body:
            return
        now = time.time()
        self.last_seen_at = now
        sequence = orjson.loads(entry.body)["sequence"]
        sent_at = self._sent_at.pop(sequence, None)
        if sent_at is not None:
            self.round_trip_seconds = now - sent_at
        for old in [n for n in self._sent_at if n < sequence]:
            del self._sent_at[old]  # lost on the way: nothing will come for them

    def _send(self) -> float:
        if not self.healthy():
            log.warning("no probe of this worker came through for %.1fs: reconnecting the "
                        "reader", self.age())
            self.reader.reconnect()
            self.last_seen_at = time.time()  # give the new connection two intervals
        self._sequence += 1
        now = time.time()
        self._sent_at[self._sequence] = now
        body = orjson.dumps({"probe": self._tag, "sequence": self._sequence, "sent": now})
        probe = Message(id=f"probe-{self._tag}-{self._sequence}", type=PROBE_TYPE,
                        service="pushservice", topics=(PROBE_TOPIC,), body=body,
                        ttl_seconds=PROBE_TTL_SECONDS,
                        expires_at_ms=int((now + PROBE_TTL_SECONDS) * 1000), client_id=False)
        self.store.publish([probe], deadline=now + self.timeout, counter="probes")
        return self.interval
