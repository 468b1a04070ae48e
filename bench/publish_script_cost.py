"""What Redis spends on one publish, against a real redis-server.

Run: ``.venv/bin/python -m bench.publish_script_cost [--calls 2000]``

Prints JSON: for requests of 1, 20, 100 and 500 messages (each with its own id, as the
Python client sends them), Redis's CPU per publish script call (``INFO cpu``, which
counts nothing of this process), beside a baseline measured on the same server in the
same run: the same entries written with bare XADDs in one pipeline per request. The
ratio is what the script adds to writing the entries at all (the epoch, each entry's
predecessor, the byte count and trims, remembered ids and requests).
"""

from __future__ import annotations

import argparse
import json
import uuid

import redis

from bench.servers import scratch_redis
from pushservice.message import MessageFactory
from pushservice.settings import Settings
from pushservice.store import MessageStore

SIZES = (1, 20, 100, 500)


def _requests(factory: MessageFactory, size: int, count: int) -> list[list]:
    return [[factory.build({"type": "progress", "service": "bench", "id": uuid.uuid4().hex,
                            "target": {"channel": "bench"},
                            "data": {"progress": 50, "message": f"step {call}.{n}"}})
             for n in range(size)] for call in range(count)]


def _redis_cpu(client: redis.Redis) -> float:
    cpu = client.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def _per_call_us(client: redis.Redis, write, requests: list[list]) -> float:
    before = _redis_cpu(client)
    for messages in requests:
        write(messages)
    return (_redis_cpu(client) - before) * 1e6 / len(requests)


def measure(calls: int) -> dict:
    with scratch_redis("publish-script-cost-") as port:
        return _measure(calls, port)


def _measure(calls: int, port: int) -> dict:
    client = redis.Redis(port=port)
    store = MessageStore(Settings().replace(redis_url=f"redis://127.0.0.1:{port}/0"))
    factory = MessageFactory(message_ttl=3600, max_message_bytes=65536)

    def bare(messages: list) -> None:
        pipe = client.pipeline(transaction=False)
        for message in messages:
            pipe.xadd("bare", {"h": f"{message.type} {','.join(message.topics)}",
                               "m": message.body})
        pipe.execute()

    def script(messages: list) -> None:
        store.publish(messages)

    results = []
    try:
        for size in SIZES:
            count = max(20, calls * 20 // (size + 19))  # fewer calls for larger requests
            _per_call_us(client, script, _requests(factory, size, 50))  # warm-up
            bare_us = _per_call_us(client, bare, _requests(factory, size, count))
            script_us = _per_call_us(client, script, _requests(factory, size, count))
            results.append({"messages_per_call": size, "calls": count,
                            "redis_cpu_us_per_call": round(script_us),
                            "bare_xadds_us_per_call": round(bare_us),
                            "ratio": round(script_us / bare_us, 2)})
    finally:
        store.close()
    return {"benchmark": "publish script, Redis CPU per call", "results": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000,
                        help="calls of one message (larger requests: proportionally fewer)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.calls), indent=1))


if __name__ == "__main__":
    main()
