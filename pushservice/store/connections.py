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
from collections.abc import Iterable, Mapping
from typing import Any

from .client import Keys, RedisConnections, translate_errors

# Admit a connection: enforce the per-user limit and record it, atomically.
_ADMIT_SCRIPT = """
local now = tonumber(ARGV[1])
local expires = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local id = ARGV[4]
if KEYS[3] ~= '' and limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= limit then
    return 0
  end
end
if KEYS[3] ~= '' then
  redis.call('ZADD', KEYS[3], expires, id)
  redis.call('PEXPIREAT', KEYS[3], expires)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('PEXPIREAT', KEYS[1], expires)
redis.call('ZADD', KEYS[2], 0, id)
return 1
"""

_LISTING_BATCH = 200


class ConnectionRecords:
    """One record per live connection, and each user's count of streams."""

    def __init__(self, connections: RedisConnections, keys: Keys) -> None:
        self.connections = connections
        self.keys = keys

    # -- connections --------------------------------------------------------------------

    @translate_errors
    def admit(self, record: Mapping[str, Any], user: str | None, user_limit: int,
              ttl_seconds: float) -> bool:
        """Record a connection; False when ``user`` already holds ``user_limit`` streams
        (0 means no limit)."""
        now_ms = int(time.time() * 1000)
        expires = now_ms + int(ttl_seconds * 1000)
        connection_id = record["connection_id"]
        keys = [self.keys.connection(connection_id), self.keys.connections,
                self.keys.user(user) if user else ""]
        args: list[Any] = [now_ms, expires, user_limit, connection_id]
        for field, value in record.items():
            args += [field, _encode(value)]
        result = self.connections.script(_ADMIT_SCRIPT)(keys=keys, args=args,
                                                      client=self.connections.command)
        return bool(result)

    @translate_errors
    def remove(self, connection_id: str, user: str | None) -> None:
        pipe = self.connections.command.pipeline(transaction=False)
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
