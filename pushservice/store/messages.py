"""The message stream: publishing, reading and replaying.

Messages live in one Redis Stream. Each entry has three fields: ``h``, a header with the
stream's epoch, the message type, its expiry time and its topics, so that readers route
without parsing the message; ``m``, the message itself; and ``p``, the id of the entry
written just before it, so that a resume can tell exactly whether trimming removed
anything it had not seen (Redis reports no such thing for trims). Publishing runs
one Lua script per request: it writes every message of the request or none, trims the
stream by length and by age, and remembers the request for a while so that a retried
call (redis-py retries after a lost reply) returns the first answer instead of writing
the messages twice. A publisher-chosen message id is remembered for the message's TTL:
a repeat is answered with the original's event id and not delivered again.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from ..engine.position import Position, parse_stream_id
from ..errors import StoreUnavailableError
from ..message import Message
from ..settings import Settings
from .client import Keys, RedisConnections, deadline_ms, translate_errors

log = logging.getLogger(__name__)

# How long a request is remembered to make a retried publish idempotent (seconds).
REQUEST_MEMORY_SECONDS = 120

# KEYS: stream, epoch, request marker, shared counters, then one key per message that
# carries its publisher's own id. ARGV: new epoch, max length, MESSAGE_TTL in ms, request
# memory, deadline (Unix ms, 0: none), the counter to add the messages written to,
# message count n, count d of such messages; then d pairs (message number, ttl); then n
# pairs (header, body).
_PUBLISH_SCRIPT = """
local remembered = redis.call('GET', KEYS[3])
if remembered then return {'remembered', remembered} end
local deadline = tonumber(ARGV[5])
if deadline > 0 then
  -- The caller has answered 503 by now (Redis was stalled): write nothing.
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > deadline then
    return {'expired'}
  end
end
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local n = tonumber(ARGV[7])
local d = tonumber(ARGV[8])
local chosen = {}
for j = 1, d do
  chosen[tonumber(ARGV[7 + 2 * j])] = {KEYS[4 + j], ARGV[8 + 2 * j]}
end
-- Each entry names the one written before it. This script never trims the newest entry,
-- so that is the stream's last entry; an emptied stream still knows its last id.
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
local previous = '0-0'
if newest then
  previous = newest[1]
elseif redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then previous = info[i + 1] end
  end
end
local out = {epoch}
local written = 0
local base = 9 + 2 * d
for i = 1, n do
  local own = chosen[i]
  local id = false
  if own then id = redis.call('GET', own[1]) end
  if id then
    out[#out + 1] = id
    out[#out + 1] = '1'
  else
    id = redis.call('XADD', KEYS[1], '*', 'h', epoch .. ' ' .. ARGV[base], 'm', ARGV[base + 1],
                    'p', previous)
    previous = id
    if own then redis.call('SET', own[1], id, 'EX', own[2]) end
    written = written + 1
    out[#out + 1] = id
    out[#out + 1] = '0'
  end
  base = base + 2
end
if written > 0 then
  redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
  -- By age on Redis's own clock (the newest id's time), never on a publisher's: a
  -- skewed clock could otherwise trim what was just written.
  local newest_ms = tonumber(string.match(previous, '^(%d+)'))
  redis.call('XTRIM', KEYS[1], 'MINID', '~', (newest_ms - tonumber(ARGV[3])) .. '-0')
end
redis.call('HINCRBY', KEYS[4], ARGV[6], written)
redis.call('SET', KEYS[3], table.concat(out, ' '), 'EX', ARGV[4])
return out
"""

_ENSURE_EPOCH_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
return epoch
"""


class Published:
    """Where one message went: its event id, and whether it was a repeat."""

    __slots__ = ("duplicate", "epoch", "message", "stream_id")

    def __init__(self, message: Message, epoch: str, stream_id: str, duplicate: bool) -> None:
        self.message = message
        self.epoch = epoch
        self.stream_id = stream_id  # "<ms>-<seq>", as Redis gave it
        self.duplicate = duplicate

    @property
    def event_id(self) -> str:
        return f"{self.epoch}-{self.stream_id}"

    @property
    def position(self) -> Position:
        return Position(self.epoch, *parse_stream_id(self.stream_id))


class Entry:
    """One stream entry as the reader and replay see it.

    ``named_frame`` and ``plain_frame`` are left empty here: the engine encodes each SSE
    frame once per entry and keeps it on the entry for every subscriber (sse.py)."""

    __slots__ = (
        "body",
        "epoch",
        "event_id",
        "expires_at_ms",
        "ms",
        "named_frame",
        "plain_frame",
        "previous_id",
        "seq",
        "topics",
        "type",
    )

    def __init__(self, ms: int, seq: int, epoch: str, topics: tuple[str, ...], type_: str,
                 body: bytes, expires_at_ms: int, previous_id: bytes | None = None) -> None:
        self.ms = ms
        self.seq = seq
        self.epoch = epoch
        self.event_id = f"{epoch}-{ms}-{seq}"
        self.topics = topics
        self.type = type_
        self.body = body
        self.expires_at_ms = expires_at_ms
        self.previous_id = previous_id  # the ``p`` field, as Redis gave it
        self.named_frame: bytes | None = None
        self.plain_frame: bytes | None = None

    def expired(self, now_ms: float) -> bool:
        """Past the message's TTL: neither delivered nor replayed."""
        return bool(self.expires_at_ms) and self.expires_at_ms < now_ms

    @property
    def key(self) -> tuple[int, int]:
        return (self.ms, self.seq)

    @property
    def previous(self) -> tuple[int, int] | None:
        """The key of the entry written just before this one (None for an entry written
        before entries named it)."""
        return None if self.previous_id is None else parse_stream_id(self.previous_id)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What resuming needs to know about the stream. Ids are (ms, seq) keys.

    ``first_predecessor`` is the id written just before the first kept entry (its ``p``
    field; (0, 0) when it was the first entry ever), None when that entry does not say.
    ``entries_added`` (Redis 7.0+) counts every entry ever added; ``max_deleted``
    (7.0+) is the newest id removed by XDEL (trims leave it at 0-0). Both None on 6.2.
    """

    epoch: str | None
    length: int
    first: tuple[int, int] | None
    last_generated: tuple[int, int] | None
    first_predecessor: tuple[int, int] | None = None
    entries_added: int | None = None
    max_deleted: tuple[int, int] | None = None


def parse_stream_info(epoch: str | None, reply) -> StreamInfo:
    """``XINFO STREAM``'s reply (as redis-py returns it on Redis 6.2, 7.x and 8.x) as a
    StreamInfo; ``reply`` None means there is no stream."""
    if reply is None:
        return StreamInfo(epoch, 0, None, None)
    fields = _pairs(reply)
    first = fields.get(b"first-entry")
    predecessor = _pairs(first[1]).get(b"p") if first else None
    added = fields.get(b"entries-added")
    max_deleted = fields.get(b"max-deleted-entry-id")
    return StreamInfo(
        epoch=epoch,
        length=int(fields.get(b"length", 0)),
        first=parse_stream_id(first[0]) if first else None,
        last_generated=parse_stream_id(fields[b"last-generated-id"]),
        first_predecessor=parse_stream_id(predecessor) if predecessor else None,
        entries_added=None if added is None else int(added),
        max_deleted=parse_stream_id(max_deleted) if max_deleted else None,
    )


class MessageStore:
    """The message stream (the Redis Stream every message goes through), for one
    process."""

    def __init__(self, settings: Settings, connections: RedisConnections | None = None) -> None:
        self.settings = settings
        self.connections = connections or RedisConnections(settings)
        self.keys = Keys(settings.stream_key_prefix)
        self.stream_key = self.keys.stream
        self.epoch_key = self.keys.epoch

    @property
    def client(self) -> redis.Redis:
        """The shared command client."""
        return self.connections.command

    def reader_client(self) -> redis.Redis:
        """A dedicated client for the reader's blocking XREAD."""
        return self.connections.reader()

    def close(self) -> None:
        self.connections.close()

    # -- publishing ---------------------------------------------------------------------

    @translate_errors
    def publish(self, messages: Sequence[Message], deadline: float | None = None,
                counter: str = "published") -> list[Published]:
        """Write ``messages`` in one round trip, all or none, counted in the shared
        ``counter`` (``published``; health probes count apart). With a ``deadline``
        (``time.time()`` seconds), nothing is written once Redis's clock is past it (less
        client.DEADLINE_MARGIN_SECONDS): a caller that gave up by then can say "nothing was
        written" (StoreUnavailableError when the write came too late)."""
        client = self.client
        keys = [self.stream_key, self.epoch_key, self.keys.request_prefix + uuid.uuid4().hex,
                self.keys.stats]
        chosen: list[object] = []
        entries: list[object] = []
        for number, message in enumerate(messages, 1):
            if message.client_id:
                keys.append(f"{self.keys.message_prefix}{message.service}:{message.id}")
                chosen += [number, message.ttl_seconds]
            entries += [f"{message.type} {message.expires_at_ms} {','.join(message.topics)}",
                        message.body]
        args = [new_epoch(), self.settings.stream_max_length,
                self.settings.message_ttl * 1000, REQUEST_MEMORY_SECONDS,
                deadline_ms(deadline), counter, len(messages), len(chosen) // 2, *chosen,
                *entries]
        replicas = self.settings.redis_wait_replicas
        if replicas:
            # Acknowledged only once replicas have it: a failover cannot lose it then.
            pipe = client.pipeline(transaction=False)
            self.connections.script(_PUBLISH_SCRIPT)(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", replicas, self.settings.redis_wait_timeout_ms)
            reply, acknowledged = pipe.execute()
        else:
            reply = self.connections.script(_PUBLISH_SCRIPT)(keys=keys, args=args,
                                                             client=client)
        if reply[0] == b"expired":
            raise StoreUnavailableError(
                "Redis took too long to answer (REQUEST_TIMEOUT_SECONDS); nothing was "
                "written.", retry_after=2, details={"written": False})
        if reply[0] == b"remembered":
            reply = reply[1].split(b" ")
        if replicas and int(acknowledged) < replicas:
            raise StoreUnavailableError(
                f"The primary took the messages, but only {acknowledged} of "
                f"{replicas} replicas confirmed them within REDIS_WAIT_TIMEOUT_MS: they may "
                "be delivered, or lost in a failover. Retrying with the same message ids "
                "is safe (a repeat is answered as a duplicate).", retry_after=1,
                details={"written": "unconfirmed", "replicas": int(acknowledged)})
        epoch = reply[0].decode()
        return [Published(message, epoch, reply[1 + 2 * index].decode(),
                          reply[2 + 2 * index] == b"1")
                for index, message in enumerate(messages)]

    # -- reading ------------------------------------------------------------------------

    @translate_errors
    def read(self, client: redis.Redis, after: tuple[int, int], block_ms: int,
             count: int) -> list[Entry]:
        """Block up to ``block_ms`` for entries after ``after``; at most ``count``."""
        reply = client.execute_command("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS",
                                       self.stream_key, f"{after[0]}-{after[1]}")
        if not reply:
            return []
        # The reply as Redis sent it (RESP2: stream -> [id, [field, value, ...]] entries),
        # without redis-py building a dict per entry: the reader parses every entry.
        stream = reply[0] if isinstance(reply, list) else next(iter(reply.items()))
        return [_read_entry(entry_id, flat) for entry_id, flat in stream[1]]

    @translate_errors
    def read_range(self, after: tuple[int, int], count: int) -> list[Entry]:
        """Up to ``count`` entries after ``after`` (exclusive), oldest first."""
        reply = self.client.xrange(self.stream_key, min=f"({after[0]}-{after[1]}",
                                   max="+", count=count)
        return [_entry(entry_id, fields) for entry_id, fields in reply]

    @translate_errors
    def read_newest(self, count: int, max_bytes: int,
                    client: redis.Redis | None = None) -> list[Entry]:
        """The newest entries of the stream, oldest first: at most ``count``, and no more
        once their bodies reach ``max_bytes`` (read backwards a page at a time)."""
        client = client or self.client
        newest_first: list[Entry] = []
        size = 0
        before = "+"
        while len(newest_first) < count and size < max_bytes:
            page = client.xrevrange(self.stream_key, max=before, min="-",
                                    count=min(500, count - len(newest_first)))
            if not page:
                break
            for entry_id, fields in page:
                entry = _entry(entry_id, fields)
                newest_first.append(entry)
                size += len(entry.body)
            if len(page) < 500:
                break
            before = f"({page[-1][0].decode()}"
        return newest_first[::-1]

    @translate_errors
    def current_epoch(self, client: redis.Redis | None = None) -> str:
        """The stream's epoch, created if the stream has none yet."""
        reply = self.connections.script(_ENSURE_EPOCH_SCRIPT)(keys=[self.epoch_key], args=[new_epoch()],
                                client=client or self.client)
        return reply.decode()

    @translate_errors
    def head_key(self, client: redis.Redis | None = None) -> tuple[int, int]:
        """The id of the newest entry the stream ever had (even if trimmed since), or
        (0, 0) for a missing stream."""
        try:
            info = (client or self.client).execute_command("XINFO", "STREAM", self.stream_key)
        except redis.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return (0, 0)
            raise
        return parse_stream_id(_pairs(info)[b"last-generated-id"])

    @translate_errors
    def stream_info(self) -> StreamInfo:
        """Epoch, length and the boundaries of what the stream still holds."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.epoch_key)
        pipe.execute_command("XINFO", "STREAM", self.stream_key)
        epoch, info = pipe.execute(raise_on_error=False)
        if isinstance(epoch, Exception):
            raise epoch
        if isinstance(info, redis.ResponseError) and "no such key" in str(info).lower():
            info = None  # the stream was never written, or was lost
        elif isinstance(info, Exception):
            raise info
        return parse_stream_info(epoch.decode() if epoch else None, info)

    @translate_errors
    def ping(self) -> float:
        """Round-trip time to Redis in seconds; fails fast (one second, no retry)."""
        started = time.perf_counter()
        self.connections.probe.ping()
        return time.perf_counter() - started

    @translate_errors
    def length(self) -> int:
        """Entries in the stream (what Redis holds for replay)."""
        return int(self.client.xlen(self.stream_key))


def new_epoch() -> str:
    """A fresh epoch tag: short, random, alphanumeric."""
    return secrets.token_hex(4)


def _pairs(flat: Iterable) -> dict:
    if isinstance(flat, dict):
        return flat
    items = iter(flat)
    return dict(zip(items, items))


# Topic lists as headers spell them -> their tuple: a fan-out's entries share a few.
_topic_tuples: dict[str, tuple[str, ...]] = {}
_TOPIC_TUPLES_MAX = 4096


def _read_entry(entry_id: bytes, flat) -> Entry:
    """An entry as XREAD gives it: fields in the order the publish script wrote them
    (h, m, p), read without building a dict; any other shape through ``_entry``."""
    if isinstance(flat, list) and len(flat) == 6 and flat[0] == b"h" and flat[2] == b"m":
        ms, _, seq = entry_id.partition(b"-")
        epoch, type_, expires, topics = flat[1].decode().split(" ", 3)
        parsed = _topic_tuples.get(topics)
        if parsed is None:
            parsed = tuple(topics.split(",")) if topics else ()
            if len(_topic_tuples) >= _TOPIC_TUPLES_MAX:
                _topic_tuples.clear()
            _topic_tuples[topics] = parsed
        return Entry(int(ms), int(seq), epoch, parsed, type_, flat[3], int(expires),
                     flat[5] if flat[4] == b"p" else None)
    return _entry(entry_id, _pairs(flat))


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    ms, _, seq = entry_id.partition(b"-")
    # h = "<epoch> <type> <expires ms> <topic>,<topic>,..." (names hold no spaces)
    header = fields.get(b"h", b"0 custom 0 ").decode()
    epoch, type_, expires, topics = header.split(" ", 3)
    return Entry(
        ms=int(ms),
        seq=int(seq),
        epoch=epoch,
        topics=tuple(topics.split(",")) if topics else (),
        type_=type_,
        body=fields.get(b"m", b"{}"),
        expires_at_ms=int(expires),
        previous_id=fields.get(b"p"),
    )