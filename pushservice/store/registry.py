"""Live connections, worker snapshots, instances and shared counters in Redis.

Layout (all keys share the stream's hash tag):
- ``conn:<id>`` hash per connection, with a TTL that its worker renews; a worker that dies
  stops renewing, so its connections vanish within the TTL.
- ``conns`` sorted set of connection ids (all scores 0: ordered by id, which starts with
  the connect time), for listing with a cursor; members whose hash expired are pruned
  when a listing meets them.
- ``user-conns:<user>`` sorted set per user, scored by expiry time: how many streams a
  user holds across every worker and instance.
- ``worker:<instance>:<pid>`` snapshot of a worker's figures, ``workers`` its index.
- ``instance:<name>`` and ``instances``: the registered instances.
- ``stats`` hash of counters shared by every worker and instance.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

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

# Renew a leadership lease only if we hold it (or take it if free).
_LEAD_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_LISTING_BATCH = 200


class RegistryStore:
    """Redis side of the connection registry."""

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

    # -- workers, instances, counters ---------------------------------------------------

    @translate_errors
    def publish_worker(self, worker_id: str, snapshot: Mapping[str, Any],
                       counter_deltas: Mapping[str, int], ttl_seconds: float) -> None:
        """Store a worker's snapshot and add its counter deltas to the shared ones."""
        pipe = self.connections.command.pipeline(transaction=False)
        self._put_record(pipe, self.keys.workers, self.keys.worker, worker_id, snapshot,
                         ttl_seconds)
        for name, delta in counter_deltas.items():
            pipe.hincrby(self.keys.stats, name, delta)
        pipe.execute()

    @translate_errors
    def remove_worker(self, worker_id: str) -> None:
        self._remove_record(self.keys.workers, self.keys.worker, worker_id)

    @translate_errors
    def worker_snapshots(self) -> list[dict[str, Any]]:
        """Snapshots of the workers that are alive (renewed within their TTL)."""
        return self._live_records(self.keys.workers, self.keys.worker)

    @translate_errors
    def counters(self) -> dict[str, int]:
        raw = self.connections.command.hgetall(self.keys.stats)
        return {name.decode(): int(value) for name, value in raw.items()}

    @translate_errors
    def put_instance(self, name: str, record: Mapping[str, Any], ttl_seconds: float) -> None:
        pipe = self.connections.command.pipeline(transaction=False)
        self._put_record(pipe, self.keys.instances, self.keys.instance, name, record,
                         ttl_seconds)
        pipe.execute()

    @translate_errors
    def remove_instance(self, name: str) -> None:
        self._remove_record(self.keys.instances, self.keys.instance, name)

    @translate_errors
    def instances(self) -> list[dict[str, Any]]:
        """The instances whose registration is alive."""
        return self._live_records(self.keys.instances, self.keys.instance)

    # Workers and instances alike: a JSON record per name, and an index of the names
    # scored by when each record expires.

    @staticmethod
    def _put_record(pipe, index_key: str, record_key, name: str,
                    record: Mapping[str, Any], ttl_seconds: float) -> None:
        expires = int((time.time() + ttl_seconds) * 1000)
        pipe.set(record_key(name), orjson.dumps(record), pxat=expires)
        pipe.zadd(index_key, {name: expires})

    def _remove_record(self, index_key: str, record_key, name: str) -> None:
        pipe = self.connections.command.pipeline(transaction=False)
        pipe.delete(record_key(name))
        pipe.zrem(index_key, name)
        pipe.execute()

    def _live_records(self, index_key: str, record_key) -> list[dict[str, Any]]:
        """The JSON records of an index scored by expiry time, dropping expired ones."""
        client = self.connections.command
        client.zremrangebyscore(index_key, "-inf", int(time.time() * 1000))
        names = [name.decode() for name in client.zrange(index_key, 0, -1)]
        if not names:
            return []
        raws = client.mget([record_key(name) for name in names])
        return [orjson.loads(raw) for raw in raws if raw]

    @translate_errors
    def lead(self, role: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lease on ``role``; True while ``holder`` holds it."""
        return bool(self.connections.script(_LEAD_SCRIPT)(
            keys=[self.keys.leader_prefix + role], args=[holder, int(ttl_seconds * 1000)],
            client=self.connections.command))

    @translate_errors
    def resign(self, role: str, holder: str) -> None:
        self.connections.script(_RELEASE_SCRIPT)(
            keys=[self.keys.leader_prefix + role], args=[holder],
            client=self.connections.command)


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
