"""What the connection registry costs per connection, against a real redis-server.

Run: ``.venv/bin/python -m bench.registry_cost [--connections 1000]``

Prints JSON: Redis memory per recorded connection; the time to admit one connection
and to remove one, as ratios of a plain PING round trip measured in the same run; and
the time one worker's periodic renewal takes for all its connections, per connection,
with and without changed fields. Figures drift on a shared machine; the ratios less so.
"""

from __future__ import annotations

import argparse
import json
import time

import redis

from bench.servers import scratch_redis
from pushservice.settings import Settings
from pushservice.store import ConnectionRecords, Keys, RedisConnections


def _record(index: int) -> dict:
    return {
        "connection_id": f"c{int(time.time() * 1000):011x}{index:010x}",
        "instance": "bench-8089",
        "worker": 4242,
        "kind": "user",
        "user": f"user{index}",
        "topics": [f"user:user{index}", f"session:s{index}"],
        "remote_addr": "10.1.2.3",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) bench",
        "connected_at": f"{time.time():.3f}",
        "frames_sent": 0,
        "last_event_id": None,
    }


def _per_call(func, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        func()
    return (time.perf_counter() - started) / repeat


def measure(connections: int) -> dict:
    with scratch_redis("registry-cost-") as port:
        return _measure(connections, port)


def _measure(connections: int, port: int) -> dict:
    client = redis.Redis(port=port)
    settings = Settings().replace(redis_url=f"redis://127.0.0.1:{port}/0")
    store = ConnectionRecords(RedisConnections(settings), Keys("bench"))
    records = [_record(i) for i in range(connections)]
    ping = _per_call(client.ping, 2000)
    memory_before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    for record in records:
        store.admit([(record, record["user"])], 20, 30.0)
    admit = (time.perf_counter() - started) / connections
    memory_per_connection = (client.info("memory")["used_memory"] - memory_before) / connections
    unchanged = [(r["connection_id"], r["user"], {}) for r in records]
    changed = [
        (
            r["connection_id"],
            r["user"],
            {"frames_sent": 17, "last_event_id": "ab12cd34-1795697318432-0"},
        )
        for r in records
    ]
    renew_unchanged = _per_call(lambda: store.renew(unchanged, 30.0), 5) / connections
    renew_changed = _per_call(lambda: store.renew(changed, 30.0), 5) / connections
    started = time.perf_counter()
    for record in records:
        store.remove([(record["connection_id"], record["user"])])
    remove = (time.perf_counter() - started) / connections
    return {
        "connections": connections,
        "redis_version": client.info("server")["redis_version"],
        "baseline_ping_us": round(ping * 1e6, 1),
        "redis_bytes_per_connection": round(memory_per_connection),
        "admit_us": round(admit * 1e6, 1),
        "admit_vs_ping": round(admit / ping, 2),
        "remove_us": round(remove * 1e6, 1),
        "remove_vs_ping": round(remove / ping, 2),
        "renewal_us_per_connection_unchanged": round(renew_unchanged * 1e6, 2),
        "renewal_us_per_connection_changed": round(renew_changed * 1e6, 2),
        "renewal_vs_ping_per_connection_changed": round(renew_changed / ping, 3),
        "command": f"python -m bench.registry_cost --connections {connections}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(measure(args.connections), indent=2))


if __name__ == "__main__":
    main()
