"""What the deployment knows of itself in Redis: worker snapshots, instances, shared
counters and leadership leases.

Layout (all keys share the stream's hash tag):
- ``worker:<instance>:<pid>`` a JSON snapshot of a worker's figures, ``workers`` their
  index scored by expiry time; a worker that stops renewing drops out.
- ``instance:<name>`` and ``instances``: the registered instances, likewise.
- ``stats`` hash of counters shared by every worker and instance.
- ``leader:<role>`` a lease: which worker does a job for its whole instance.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from .client import Keys, RedisConnections, translate_errors

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


class DeploymentRecords:
    """Workers, instances, shared counters and leases."""

    def __init__(self, connections: RedisConnections, keys: Keys) -> None:
        self.connections = connections
        self.keys = keys

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
