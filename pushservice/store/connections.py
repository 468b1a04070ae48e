"""The records of live connections in Redis, across every worker and instance.

Layout (all keys share the stream's hash tag):
- ``conn:<id>`` hash per connection, with a TTL that its worker renews; a worker that dies
  stops renewing, so its connections vanish within the TTL.
- ``conns`` sorted set of connection ids (all scores 0: ordered by id, which starts with
  the connect time), for listing with a cursor; members whose hash expired are pruned
  when a listing meets them.
- ``user-conns:<user>`` sorted set per user, scored by expiry time: how many streams a
  user holds across every worker and instance.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import StoreUnavailableError
from .client import Keys, RedisConnections, deadline_ms, translate_errors

# Admit connections, in order: enforce each user's limit and record each one, atomically.
# KEYS: the index of connections, then per connection its record and its user's set ('' for
# none). ARGV: now, expiry, the per-user limit (0: none), the deadline (Unix ms, 0: none),
# then per connection its id, the number of fields f and f name/value pairs. Returns 1 or 0
# per connection, or 'expired' when the deadline passed (nothing written).
_ADMIT_SCRIPT = """
local deadline = tonumber(ARGV[4])
if deadline > 0 then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > deadline then
    return 'expired'
  end
end
local now = tonumber(ARGV[1])
local expires = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local out = {}
local a = 5
for i = 1, (#KEYS - 1) / 2 do
  local record, user = KEYS[2 * i], KEYS[2 * i + 1]
  local id, f = ARGV[a], tonumber(ARGV[a + 1])
  local admitted = 1
  -- A retried call finds its connection already counted: still admitted.
  if user ~= '' and limit > 0 and not redis.call('ZSCORE', user, id) then
    redis.call('ZREMRANGEBYSCORE', user, '-inf', now)
    if redis.call('ZCARD', user) >= limit then admitted = 0 end
  end
  if admitted == 1 then
    if user ~= '' then
      redis.call('ZADD', user, expires, id)
      redis.call('PEXPIREAT', user, expires)
    end
    redis.call('HSET', record, unpack(ARGV, a + 2, a + 1 + 2 * f))
    redis.call('PEXPIREAT', record, expires)
    redis.call('ZADD', KEYS[1], 0, id)
  end
  out[i] = admitted
  a = a + 2 + 2 * f
end
return out
"""

_LISTING_BATCH = 200


class ConnectionRecords:
    """One record per live connection, and each user's count of streams."""

    def __init__(self, connections: RedisConnections, keys: Keys) -> None:
        self.connections = connections
        self.keys = keys

    # -- connections --------------------------------------------------------------------

    @translate_errors
    def admit(self, records: Sequence[tuple[Mapping[str, Any], str | None]], user_limit: int,
              ttl_seconds: float, deadline: float | None = None) -> list[bool]:
        """Record connections, each ``(record, user)``, in order, in one round trip; False
        for each whose user already holds ``user_limit`` streams (0 means no limit).
        Nothing is written once Redis's clock passes ``deadline`` (less the margin of
        messages.DEADLINE_MARGIN_SECONDS): StoreUnavailableError."""
        now_ms = int(time.time() * 1000)
        expires = now_ms + int(ttl_seconds * 1000)
        keys = [self.keys.connections]
        args: list[Any] = [now_ms, expires, user_limit, deadline_ms(deadline)]
        for record, user in records:
            connection_id = record["connection_id"]
            keys += [self.keys.connection(connection_id), self.keys.user(user) if user else ""]
            args += [connection_id, len(record)]
            for field, value in record.items():
                args += [field, _encode(value)]
        result = self.connections.script(_ADMIT_SCRIPT)(keys=keys, args=args,
                                                      client=self.connections.command)
        if result == b"expired":
            raise StoreUnavailableError(
                "The connection's record did not reach Redis within REQUEST_TIMEOUT_SECONDS "
                "(Redis, or this worker, was too busy).", retry_after=2)
        return [bool(admitted) for admitted in result]

    @translate_errors
    def remove(self, connections: Sequence[tuple[str, str | None]]) -> None:
        """Forget connections, each ``(connection_id, user)``, in one round trip."""
        pipe = self.connections.command.pipeline(transaction=False)
        for connection_id, user in connections:
            pipe.delete(self.keys.connection(connection_id))
            pipe.zrem(self.keys.connections, connection_id)
            if user:
                pipe.zrem(self.keys.user(user), connection_id)
        pipe.execute()

    @translate_errors
    def renew(self, updates: Iterable[tuple[str, str | None, Mapping[str, Any]]],
              ttl_seconds: float) -> None:
        """Refresh connections: ``(connection_id, user, changed fields)`` each."""
        expires = int((time.time() + ttl_seconds) * 1000)
        pipe = self.connections.command.pipeline(transaction=False)
        for connection_id, user, fields in updates:
            key = self.keys.connection(connection_id)
            if fields:
                pipe.hset(key, mapping={name: _encode(v) for name, v in fields.items()})
            pipe.pexpireat(key, expires)
            if user:
                pipe.zadd(self.keys.user(user), {connection_id: expires})
                pipe.pexpireat(self.keys.user(user), expires)
        pipe.execute()

    @translate_errors
    def get(self, connection_id: str) -> dict[str, Any] | None:
        raw = self.connections.command.hgetall(self.keys.connection(connection_id))
        return _decode_record(raw) if raw else None

    @translate_errors
    def scan(self, after: str | None, wanted: int, keep) -> tuple[list[dict[str, Any]],
                                                                  str | None]:
        """Connections with ids after ``after`` for which ``keep(record)`` holds, in id
        order, at most ``wanted``. Returns them and the cursor of the next page (None
        at the end)."""
        client = self.connections.command
        found: list[dict[str, Any]] = []
        start = f"({after}" if after else "-"
        while True:
            ids = [i.decode() for i in client.zrangebylex(
                self.keys.connections, start, "+", start=0, num=_LISTING_BATCH)]
            if not ids:
                return found, None
            pipe = client.pipeline(transaction=False)
            for connection_id in ids:
                pipe.hgetall(self.keys.connection(connection_id))
            records = pipe.execute()
            gone = [cid for cid, raw in zip(ids, records) if not raw]
            if gone:
                client.zrem(self.keys.connections, *gone)
            for connection_id, raw in zip(ids, records):
                if not raw or b"connection_id" not in raw:
                    continue  # gone, or only a renewal that raced with the close
                record = _decode_record(raw)
                if keep(record):
                    found.append(record)
                    if len(found) == wanted:
                        return found, connection_id
            start = f"({ids[-1]}"


def _encode(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(value)
    return "" if value is None else str(value)


_INTEGER_FIELDS = ("worker", "frames_sent")
_FLOAT_FIELDS = ("connected_at",)


def _decode_record(raw: Mapping[bytes, bytes]) -> dict[str, Any]:
    record: dict[str, Any] = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
    for name in _INTEGER_FIELDS:
        if name in record:
            record[name] = int(record[name] or 0)
    for name in _FLOAT_FIELDS:
        if name in record:
            record[name] = float(record[name] or 0)
    record["topics"] = [t for t in record.get("topics", "").split(",") if t]
    for name in ("user", "last_event_id"):
        if record.get(name) == "":
            record[name] = None
    return record
