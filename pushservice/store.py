"""The only module that talks to Redis: key names, publishing, reading and replaying.

Messages live in one Redis Stream. Each entry holds the message's topics in a field of
their own (``t``), so readers route without parsing the message (``m``). Publishing runs
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
from dataclasses import dataclass
from typing import Iterable, Sequence

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from .errors import StoreUnavailableError
from .message import Message
from .position import Position, parse_stream_id
from .settings import Settings
from .sse import encode_message_frame

log = logging.getLogger(__name__)

# Replies that mean "this node cannot serve you right now", raised by redis-py as
# ResponseError rather than ConnectionError.
_TRANSIENT_REPLIES = ("UNBLOCKED", "CLUSTERDOWN", "LOADING", "READONLY", "MASTERDOWN",
                      "TRYAGAIN", "NOREPLICAS")
# How long a request is remembered to make a retried publish idempotent (seconds).
REQUEST_MEMORY_SECONDS = 120

_PUBLISH_SCRIPT = """
local remembered = redis.call('GET', KEYS[3])
if remembered then return {'remembered', remembered} end
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local out = {epoch}
local n = tonumber(ARGV[5])
local base = 6
for i = 1, n do
  local key_index = tonumber(ARGV[base])
  local id = false
  if key_index > 0 then id = redis.call('GET', KEYS[key_index]) end
  if id then
    out[#out + 1] = id
    out[#out + 1] = '1'
  else
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
      't', ARGV[base + 2], 'y', ARGV[base + 3], 'm', ARGV[base + 4],
      'x', ARGV[base + 5], 'e', epoch)
    if key_index > 0 then redis.call('SET', KEYS[key_index], id, 'EX', ARGV[base + 1]) end
    out[#out + 1] = id
    out[#out + 1] = '0'
  end
  base = base + 6
end
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[3])
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


@dataclass(frozen=True, slots=True)
class Published:
    """Where one message went: its event id, and whether it was a repeat."""

    message: Message
    position: Position
    duplicate: bool


class Entry:
    """One stream entry as the reader and replay see it."""

    __slots__ = ("ms", "seq", "event_id", "topics", "type", "body", "expires_at_ms",
                 "epoch", "_named_frame", "_plain_frame")

    def __init__(self, ms: int, seq: int, epoch: str, topics: tuple[str, ...], type_: str,
                 body: bytes, expires_at_ms: int) -> None:
        self.ms = ms
        self.seq = seq
        self.epoch = epoch
        self.event_id = f"{epoch}-{ms}-{seq}"
        self.topics = topics
        self.type = type_
        self.body = body
        self.expires_at_ms = expires_at_ms
        # Frames are encoded lazily, once per entry, and shared by every subscriber.
        self._named_frame: bytes | None = None
        self._plain_frame: bytes | None = None

    def frame(self, named: bool) -> bytes:
        """The SSE frame of this entry, with or without the ``event:`` field."""
        if named:
            if self._named_frame is None:
                self._named_frame = encode_message_frame(self.event_id, self.type, self.body)
            return self._named_frame
        if self._plain_frame is None:
            self._plain_frame = encode_message_frame(self.event_id, None, self.body)
        return self._plain_frame

    @property
    def key(self) -> tuple[int, int]:
        return (self.ms, self.seq)

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.ms, self.seq)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What resuming needs to know about the stream. Ids are (ms, seq) keys."""

    epoch: str | None
    length: int
    first: tuple[int, int] | None
    last_generated: tuple[int, int] | None
    # Only Redis 7+ reports it; None on 6.2.
    max_deleted: tuple[int, int] | None


def translate_errors(func):
    """Turn redis-py's failures into StoreUnavailableError (503) once, here."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailableError(f"Redis is unavailable: {exc}", retry_after=2) from exc
        except redis.ResponseError as exc:
            if str(exc).split(" ", 1)[0] in _TRANSIENT_REPLIES:
                raise StoreUnavailableError(f"Redis cannot serve: {exc}", retry_after=2) from exc
            raise

    return wrapper


class Store:
    """Redis access for one process. Clients are created lazily, after any fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        prefix = "{" + settings.stream_key_prefix + "}"
        self.stream_key = f"{prefix}:stream"
        self.epoch_key = f"{prefix}:epoch"
        self._message_key_prefix = f"{prefix}:msg:"
        self._request_key_prefix = f"{prefix}:req:"
        self.prefix = prefix
        self._client: redis.Redis | None = None
        self._publish = None
        self._ensure_epoch = None

    # -- clients ------------------------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        """The shared command client (bounded pool; retries with backoff)."""
        if self._client is None:
            self._client = self._make_client(socket_timeout=5.0, retries=2)
            self._publish = self._client.register_script(_PUBLISH_SCRIPT)
            self._ensure_epoch = self._client.register_script(_ENSURE_EPOCH_SCRIPT)
        return self._client

    def reader_client(self) -> redis.Redis:
        """A dedicated client for blocking XREAD: its socket timeout outlasts the BLOCK
        time, and it does not retry by itself (the reader loop owns retrying)."""
        block_seconds = self.settings.reader_block_ms / 1000
        return self._make_client(socket_timeout=block_seconds + 10.0, retries=0,
                                 max_connections=1)

    def _make_client(self, socket_timeout: float, retries: int,
                     max_connections: int = 64) -> redis.Redis:
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries,
                      supported_errors=(redis.ConnectionError, redis.TimeoutError))
        pool = redis.BlockingConnectionPool.from_url(
            self.settings.redis_url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=3.0,
            health_check_interval=30,
            retry=retry,
        )
        return redis.Redis(connection_pool=pool)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- publishing ---------------------------------------------------------------------

    @translate_errors
    def publish(self, messages: Sequence[Message], now: float | None = None) -> list[Published]:
        """Write ``messages`` in one round trip, all or none."""
        client = self.client
        now = time.time() if now is None else now
        keys = [self.stream_key, self.epoch_key, self._request_key_prefix + uuid.uuid4().hex]
        args: list[object] = [
            new_epoch(),
            self.settings.stream_max_length,
            f"{int(now * 1000) - self.settings.message_ttl * 1000}-0",
            REQUEST_MEMORY_SECONDS,
            len(messages),
        ]
        for message in messages:
            key_index = 0
            if message.client_id:
                keys.append(self._message_key_prefix + message.id)
                key_index = len(keys)
            args += [key_index, message.ttl_seconds, ",".join(message.topics), message.type,
                     message.body, message.expires_at_ms]
        reply = self._publish(keys=keys, args=args, client=client)
        if reply[0] == b"remembered":
            reply = reply[1].split(b" ")
        epoch = reply[0].decode()
        results = []
        for index, message in enumerate(messages):
            ms, seq = parse_stream_id(reply[1 + 2 * index])
            results.append(Published(message, Position(epoch, ms, seq),
                                     reply[2 + 2 * index] == b"1"))
        return results

    # -- reading ------------------------------------------------------------------------

    @translate_errors
    def read(self, client: redis.Redis, after: tuple[int, int], block_ms: int,
             count: int) -> list[Entry]:
        """Block up to ``block_ms`` for entries after ``after``; at most ``count``."""
        reply = client.xread({self.stream_key: f"{after[0]}-{after[1]}"}, count=count,
                             block=block_ms)
        if not reply:
            return []
        return [_entry(entry_id, fields) for entry_id, fields in reply[0][1]]

    @translate_errors
    def read_range(self, after: tuple[int, int], count: int) -> list[Entry]:
        """Up to ``count`` entries after ``after`` (exclusive), oldest first."""
        reply = self.client.xrange(self.stream_key, min=f"({after[0]}-{after[1]}",
                                   max="+", count=count)
        return [_entry(entry_id, fields) for entry_id, fields in reply]

    @translate_errors
    def current_epoch(self, client: redis.Redis | None = None) -> str:
        """The stream's epoch, created if the stream has none yet."""
        self.client  # registers the scripts
        reply = self._ensure_epoch(keys=[self.epoch_key], args=[new_epoch()],
                                   client=client or self.client)
        return reply.decode()

    @translate_errors
    def last_entry_key(self, client: redis.Redis | None = None) -> tuple[int, int]:
        """The id of the newest entry, or (0, 0) for an empty or missing stream."""
        reply = (client or self.client).xrevrange(self.stream_key, max="+", min="-", count=1)
        if not reply:
            return (0, 0)
        return parse_stream_id(reply[0][0])

    @translate_errors
    def stream_info(self) -> StreamInfo:
        """Epoch, length and the boundaries of what the stream still holds."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.epoch_key)
        pipe.execute_command("XINFO", "STREAM", self.stream_key)
        epoch, info = pipe.execute(raise_on_error=False)
        if isinstance(epoch, Exception):
            raise epoch
        if isinstance(info, redis.ResponseError):
            # No such key: the stream was never written or was lost.
            return StreamInfo(epoch.decode() if epoch else None, 0, None, None, None)
        if isinstance(info, Exception):
            raise info
        fields = _pairs(info)
        first = fields.get(b"first-entry")
        max_deleted = fields.get(b"max-deleted-entry-id")
        return StreamInfo(
            epoch=epoch.decode() if epoch else None,
            length=int(fields.get(b"length", 0)),
            first=parse_stream_id(first[0]) if first else None,
            last_generated=parse_stream_id(fields[b"last-generated-id"]),
            max_deleted=parse_stream_id(max_deleted) if max_deleted else None,
        )

    @translate_errors
    def ping(self) -> float:
        """Round-trip time to Redis in seconds."""
        started = time.perf_counter()
        self.client.ping()
        return time.perf_counter() - started


def new_epoch() -> str:
    """A fresh epoch tag: short, random, alphanumeric."""
    return secrets.token_hex(4)


def _pairs(flat: Iterable) -> dict:
    if isinstance(flat, dict):
        return flat
    items = list(flat)
    return dict(zip(items[0::2], items[1::2]))


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    ms, _, seq = entry_id.partition(b"-")
    topics = fields.get(b"t", b"").decode()
    expires = fields.get(b"x")
    return Entry(
        ms=int(ms),
        seq=int(seq),
        epoch=fields.get(b"e", b"0").decode(),
        topics=tuple(topics.split(",")) if topics else (),
        type_=fields.get(b"y", b"custom").decode(),
        body=fields.get(b"m", b"{}"),
        expires_at_ms=int(expires) if expires else 0,
    )
