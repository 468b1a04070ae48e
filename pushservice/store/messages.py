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

from ..confirmation import AckPolicy
from ..engine.position import Position, parse_stream_id
from ..errors import ConflictError, StoreUnavailableError
from ..message import Message
from ..settings import Settings
from .acks import PUBLISH_READ_EXTRAS, PUBLISH_WRITE_RECORD, AckKeys, publish_extras
from .client import Keys, RedisConnections, deadline_ms, translate_errors

log = logging.getLogger(__name__)

# Entries per XRANGE when the store reads a stretch of the stream page by page.
_PAGE = 500

# How long a request is remembered to make a retried publish idempotent (seconds).
REQUEST_MEMORY_SECONDS = 120

# KEYS: stream, epoch, request marker, shared counters, the stream's byte count, then two
# keys per publishing service that chose its own message ids (a hash id -> event id, a
# sorted set id -> expiry ms). ARGV: new epoch, max length, MESSAGE_TTL in ms, request
# memory, deadline (Unix ms, 0: none), the counter to add the messages written to,
# message count n, count d of messages with their own id, STREAM_MAX_BYTES (0: none),
# MESSAGE_IDS_PER_SERVICE; then d quadruples (message number, index in KEYS of its
# service's hash, its id, ttl seconds); then n pairs (header, body); then what
# store/acks.publish_extras adds for messages that are not plain (an ``o`` field with
# their priority, and delivery records), with its keys after all the others.
_PUBLISH_SCRIPT = """
local remembered = redis.call('GET', KEYS[3])
if remembered then return {'remembered', remembered} end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = tonumber(ARGV[5])
if deadline > 0 and now_ms > deadline then
  -- The caller has answered 503 by now (Redis was stalled): write nothing.
  return {'expired'}
end
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local n = tonumber(ARGV[7])
local d = tonumber(ARGV[8])
local max_bytes = tonumber(ARGV[9])
local ids_cap = tonumber(ARGV[10])
local chosen = {}
for j = 0, d - 1 do
  local at = 11 + 4 * j
  local index = tonumber(ARGV[at + 1])
  chosen[tonumber(ARGV[at])] = {KEYS[index], KEYS[index + 1], ARGV[at + 2], tonumber(ARGV[at + 3])}
end
local extras = 11 + 4 * d + 2 * n
""" + PUBLISH_READ_EXTRAS + """
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
-- Bytes ever written to the stream; each entry records the count before it (field b), so
-- the stream holds (count now - its oldest entry's b) bytes.
local total = tonumber(redis.call('GET', KEYS[5]) or '0')
local out = {epoch}
local written = 0
local touched = {}
local base = 11 + 4 * d
for i = 1, n do
  local own = chosen[i]
  local id = false
  if own then
    local known = redis.call('HGET', own[1], own[3])
    if known and (tonumber(redis.call('ZSCORE', own[2], own[3]) or '0') > now_ms) then
      id = known
    end
  end
  if id then
    out[#out + 1] = id
    out[#out + 1] = '1'
  else
    local header, body = ARGV[base], ARGV[base + 1]
    local option = options[i]
    if option then
      id = redis.call('XADD', KEYS[1], '*', 'h', epoch .. ' ' .. header, 'm', body,
                      'p', previous, 'b', string.format('%.0f', total), 'o', option)
    else
      id = redis.call('XADD', KEYS[1], '*', 'h', epoch .. ' ' .. header, 'm', body,
                      'p', previous, 'b', string.format('%.0f', total))
    end
""" + PUBLISH_WRITE_RECORD + """
    total = total + #header + #body + 64
    previous = id
    if own then
      redis.call('HSET', own[1], own[3], id)
      redis.call('ZADD', own[2], now_ms + own[4] * 1000, own[3])
      touched[own[1]] = own[2]
    end
    written = written + 1
    out[#out + 1] = id
    out[#out + 1] = '0'
  end
  base = base + 2
end
-- A service's remembered ids: the expired ones go, and at most ids_cap stay (the oldest
-- are forgotten first), so that no publisher can fill Redis with them.
for hash, index in pairs(touched) do
  local gone = redis.call('ZRANGEBYSCORE', index, '-inf', now_ms, 'LIMIT', 0, 1000)
  local count = redis.call('ZCARD', index) - #gone
  if count > ids_cap then
    for _, old in ipairs(redis.call('ZRANGE', index, #gone, #gone + count - ids_cap - 1)) do
      gone[#gone + 1] = old
    end
  end
  if #gone > 0 then
    redis.call('ZREM', index, unpack(gone))
    redis.call('HDEL', hash, unpack(gone))
  end
  local last = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')[2]
  if last then
    local ttl = math.max(1, tonumber(last) - now_ms)
    redis.call('PEXPIRE', index, ttl)
    redis.call('PEXPIRE', hash, ttl)
  end
end
if written > 0 then
  redis.call('SET', KEYS[5], string.format('%.0f', total))
  redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
  -- By age on Redis's own clock (the newest id's time), never on a publisher's: a
  -- skewed clock could otherwise trim what was just written.
  local newest_ms = tonumber(string.match(previous, '^(%d+)'))
  redis.call('XTRIM', KEYS[1], 'MINID', '~', (newest_ms - tonumber(ARGV[3])) .. '-0')
  if max_bytes > 0 then
    -- By bytes: drop the oldest entries until the stream holds at most max_bytes, reading
    -- a bounded number of them per call (later calls go on where this one stopped). The
    -- oldest entry alone comes first: it is usually within the budget, and reading a
    -- page of 100 entries into Lua cost more than the rest of a publish.
    local budget = math.max(1000, 2 * written)
    local cursor = '-'
    local cut = nil
    local page_size = 1
    while budget > 0 do
      local page = redis.call('XRANGE', KEYS[1], cursor, '+', 'COUNT', page_size)
      page_size = 100
      if #page == 0 then break end
      for _, entry in ipairs(page) do
        local fields = entry[2]
        local before = nil
        for f = 1, #fields, 2 do
          if fields[f] == 'b' then before = tonumber(fields[f + 1]) end
        end
        if before == nil or total - before <= max_bytes then
          budget = 0
          break
        end
        cut = entry[1]
        budget = budget - 1
        if budget == 0 then break end
      end
      cursor = '(' .. page[#page][1]
    end
    if cut and cut ~= previous then
      redis.call('XDEL', KEYS[1], cut)
      redis.call('XTRIM', KEYS[1], 'MINID', cut)
    end
  end
end
redis.call('HINCRBY', KEYS[4], ARGV[6], written)
if a > 0 then out[#out + 1] = table.concat(overflow, ',') end
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
        "priority",
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
        # "low" or, for a message that asks for acknowledgement, its priority (the ``o``
        # field); "normal" for every other entry. A full mailbox sheds low ones first.
        self.priority = "normal"

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


class AckEntry(Entry):
    """An entry whose message asks to be acknowledged (``metadata.require_ack``):
    ``ack_id`` is the message's id, which acknowledgements and its delivery record use.
    A class of its own, so that plain entries pay nothing for it where frames are
    written."""

    __slots__ = ("ack_id",)


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

    def __init__(self, settings: Settings, connections: RedisConnections | None = None,
                 counters: object | None = None) -> None:
        self.settings = settings
        self.connections = connections or RedisConnections(settings)
        self.keys = Keys(settings.stream_key_prefix)
        self.stream_key = self.keys.stream
        self.epoch_key = self.keys.epoch
        self.ack_keys = AckKeys(self.keys)
        self.ack_policy = AckPolicy.from_settings(settings)
        # Where publishes count the messages they pushed out of full inboxes (an object
        # with an ``inbox_overflow`` integer: the worker's stats), or None.
        self.counters = counters

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
                self.keys.stats, self.keys.stream_bytes]
        service_keys: dict[str, int] = {}  # service -> index (1-based) of its hash in KEYS
        chosen: list[object] = []
        entries: list[object] = []
        # Messages that ask for acknowledgement, and low ones (a full mailbox sheds those
        # first): their entries say so. Any other message's entry is as it always was.
        special: list[tuple[int, Message]] = []
        for number, message in enumerate(messages, 1):
            if message.ack is not None or message.priority == "low":
                special.append((number, message))
            if message.client_id:
                index = service_keys.get(message.service)
                if index is None:
                    index = service_keys[message.service] = len(keys) + 1
                    keys += [f"{self.keys.message_prefix}{message.service}",
                             f"{self.keys.message_prefix}{message.service}:expiry"]
                chosen += [number, index, message.id, message.ttl_seconds]
            entries += [f"{message.type} {message.expires_at_ms} {','.join(message.topics)}",
                        message.body]
        settings = self.settings
        args = [new_epoch(), settings.stream_max_length, settings.message_ttl * 1000,
                REQUEST_MEMORY_SECONDS, deadline_ms(deadline), counter, len(messages),
                len(chosen) // 4, settings.stream_max_bytes, settings.message_ids_per_service,
                *chosen, *entries]
        extra_keys, extra_args = publish_extras(special, self.ack_keys, settings,
                                                self.ack_policy, len(keys) + 1)
        keys += extra_keys
        args += extra_args
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
                "The publish did not reach Redis within REQUEST_TIMEOUT_SECONDS (Redis, or "
                "this worker, was too busy); nothing was written.", retry_after=2,
                details={"written": False})
        if reply[0] == b"conflict":
            taken = messages[int(reply[1]) - 1]
            raise ConflictError(
                f"The message id {taken.id!r} belongs to another service's message that "
                "waits for acknowledgement: choose another id.",
                details={"id": taken.id}, code="message_id_taken")
        if reply[0] == b"remembered":
            reply = reply[1].split(b" ")
        if len(reply) > 1 + 2 * len(messages) and self.counters is not None and reply[-1]:
            # What went out of full inboxes: "number:count,..."
            self.counters.inbox_overflow += sum(
                int(part.rpartition(b":")[2]) for part in reply[-1].split(b","))
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
    def read_before(self, before: tuple[int, int], epoch: str,
                    client: redis.Redis | None = None) -> list[Entry]:
        """The entries of ``epoch`` at the stream's start, up to ``before`` (exclusive),
        oldest first: read a page at a time, up to the first entry of another epoch."""
        client = client or self.client
        found: list[Entry] = []
        start = "-"
        while True:
            page = client.xrange(self.stream_key, min=start,
                                 max=f"({before[0]}-{before[1]}", count=_PAGE)
            for entry_id, fields in page:
                entry = _entry(entry_id, fields)
                if entry.epoch != epoch:
                    return found
                found.append(entry)
            if len(page) < _PAGE:
                return found
            start = f"({page[-1][0].decode()}"

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
                                    count=min(_PAGE, count - len(newest_first)))
            if not page:
                break
            for entry_id, fields in page:
                entry = _entry(entry_id, fields)
                newest_first.append(entry)
                size += len(entry.body)
            if len(page) < _PAGE:
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
    (h, m, p, b), read without building a dict; any other shape through ``_entry``."""
    if (isinstance(flat, list) and len(flat) in (6, 8) and flat[0] == b"h"
            and flat[2] == b"m"):
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
    # o = "<priority>" or "<priority> <message id>" for a message that asks to be
    # acknowledged; absent for a plain one (normal priority).
    option = fields.get(b"o")
    priority, _, ack_id = option.decode().partition(" ") if option else ("normal", "", "")
    entry = (AckEntry if ack_id else Entry)(
        ms=int(ms),
        seq=int(seq),
        epoch=epoch,
        topics=tuple(topics.split(",")) if topics else (),
        type_=type_,
        body=fields.get(b"m", b"{}"),
        expires_at_ms=int(expires),
        previous_id=fields.get(b"p"),
    )
    entry.priority = priority
    if ack_id:
        entry.ack_id = ack_id
    return entry