"""What waiting inboxes cost: many users, each with messages that ask to be acknowledged
and wait for them, against the same service before they were there.

Run: ``.venv/bin/python -m bench.inbox_cost [--users 10000] [--per-user 100]``

The service (gunicorn, one gevent worker) and its Redis run on core 0, this process (the
load) on core 1. First, with no inbox: plain batch publishing for a few seconds, and
``--sample`` users connecting one after another (time until their ``connected`` frame).
Then ``--users`` offline users get ``--per-user`` confirmation-requiring messages each,
published in batches of 1,000: the rate, and Redis's memory per waiting message. Then the
same plain publishing again, and ``--sample`` of those users connecting one after another:
the time until their whole inbox arrived. Prints one JSON document, each figure beside its
baseline from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import redis

from bench.confirmation_cost import _percentile, service_on_its_core
from bench.publisher import HttpConnection
from bench.servers import HOST
from bench.sse_client import Subscriber

BATCH = 1000


def _post(port: int, path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _batches(port: int, bodies, connections: int = 4) -> tuple[int, float]:
    """POST each body to /batch over a few keep-alive connections; accepted, seconds."""
    loop = asyncio.get_running_loop()
    pending = list(bodies)
    accepted = 0

    async def worker() -> None:
        nonlocal accepted
        conn = (await loop.create_connection(HttpConnection, HOST, port))[1]
        while pending:
            body, count = pending.pop()
            status, reply, _ = await conn.request(_post(port, "/api/v1/messages/batch", body),
                                                  b"")
            if status != 202:
                raise RuntimeError(f"batch refused: {status} {reply[:200]!r}")
            accepted += count
        conn.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return accepted, time.perf_counter() - started


def _plain_bodies(seconds_worth: int) -> list[tuple[bytes, int]]:
    item = b'{"type":"info","service":"bench","target":{"channel":"plain"},"data":{"n":1}}'
    return [(b'{"messages":[' + b",".join([item] * BATCH) + b"]}", BATCH)
            for _ in range(seconds_worth)]


def _inbox_bodies(users: int, per_user: int) -> list[tuple[bytes, int]]:
    items = (b'{"type":"info","service":"bench","target":{"user_id":"u%d"},'
             b'"data":{"n":%d},"metadata":{"require_ack":true}}' % (user, n)
             for user in range(users) for n in range(per_user))
    bodies, chunk = [], []
    for item in items:
        chunk.append(item)
        if len(chunk) == BATCH:
            bodies.append((b'{"messages":[' + b",".join(chunk) + b"]}", BATCH))
            chunk = []
    if chunk:
        bodies.append((b'{"messages":[' + b",".join(chunk) + b"]}", len(chunk)))
    return bodies


async def _connect_times(port: int, users: list[int], wanted: int) -> list[float]:
    """Seconds from each user's request until ``wanted`` message frames arrived (0: until
    the ``connected`` frame), one user after another."""
    loop = asyncio.get_running_loop()
    times = []
    for user in users:
        done = loop.create_future()
        got = 0

        def frames(count: int, done=done) -> None:
            nonlocal got
            got += count
            if got >= wanted and not done.done():
                done.set_result(None)

        request = (f"GET /sse/user/u{user} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                   "Accept: text/event-stream\r\n\r\n").encode()
        started = time.perf_counter()
        _, stream = await loop.create_connection(
            lambda request=request: Subscriber(request, False, frames), HOST, port)
        await stream.established
        if wanted:
            await asyncio.wait_for(done, 60)
        times.append(time.perf_counter() - started)
        stream.transport.close()
    return times


def _ms(values: list[float]) -> dict:
    return {"p50_ms": round(_percentile(values, 0.5) * 1000, 2),
            "p99_ms": round(_percentile(values, 0.99) * 1000, 2)}


async def _run(port: int, client: redis.Redis, args: argparse.Namespace) -> dict:
    sample = list(range(0, args.users, max(1, args.users // args.sample)))[:args.sample]
    await _batches(port, _plain_bodies(10))  # warm up: the first requests cost more
    accepted, seconds = await _batches(port, _plain_bodies(20))
    base_plain = accepted / seconds
    base_connect = await _connect_times(port, [args.users + k for k in range(len(sample))], 0)
    memory_before = client.info("memory")["used_memory"]
    filled, fill_seconds = await _batches(port, _inbox_bodies(args.users, args.per_user))
    memory_after = client.info("memory")["used_memory"]
    accepted, seconds = await _batches(port, _plain_bodies(20))
    after_plain = accepted / seconds
    inbox_connect = await _connect_times(port, sample, args.per_user)
    return {
        "waiting_messages": filled,
        "fill_per_s": round(filled / fill_seconds, 1),
        "redis_bytes_per_waiting_message": round((memory_after - memory_before) / filled, 1),
        "redis_used_mb_after_fill": round(memory_after / 1e6, 1),
        "plain_batch_publishes_per_s": {"before": round(base_plain, 1),
                                        "with_inboxes": round(after_plain, 1),
                                        "ratio": round(after_plain / base_plain, 3)},
        "connect": {"without_inbox_until_connected": _ms(base_connect),
                    f"with_{args.per_user}_waiting_until_all_arrived": _ms(inbox_connect),
                    "sampled_users": len(sample)},
    }


def measure(args: argparse.Namespace) -> dict:
    with service_on_its_core("inbox-cost", MAX_BATCH_SIZE=str(BATCH)) as (redis_port, port):
        client = redis.Redis(host=HOST, port=redis_port)
        try:
            result = asyncio.run(_run(port, client, args))
        finally:
            client.close()
    command = (f".venv/bin/python -m bench.inbox_cost --users {args.users} "
               f"--per-user {args.per_user} --sample {args.sample}")
    return {"command": command, "users": args.users, "per_user": args.per_user,
            "pinning": "service+redis on cpu 0, load on cpu 1", **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inbox_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="users with an inbox")
    parser.add_argument("--per-user", type=int, default=100, help="messages waiting each")
    parser.add_argument("--sample", type=int, default=200, help="users who then connect")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
