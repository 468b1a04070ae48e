"""What delivery confirmation costs: messages that ask to be acknowledged against plain
messages, measured in the same run on the same service.

Run: ``.venv/bin/python -m bench.confirmation_cost [--users 200] [--rounds 3]
[--seconds 3]``

The service (gunicorn, one gevent worker) and its Redis run on core 0, this process (the
load) on core 1. ``--users`` user streams (``/sse/user/u<k>``) stay open; ``--publishers``
keep-alive connections publish back to back (each waits for its answer: a closed loop),
every message to the next user in turn. Rounds alternate: plain messages, then the same
with ``"metadata": {"require_ack": true}``, so that a shared machine's drift falls on
both alike. Then the users acknowledge what they got, closed loop, one id per request.

Prints one JSON document: per kind, publishes per second, publish latency (request sent
to answer, p50 and p99), frames delivered per second and delivery latency (publish to the
frame read by the subscriber, p50 and p99), each with its ratio to plain messages; and
acknowledgements per second as a ratio to plain publishes per second. Figures drift on a
shared machine; ratios of alternating rounds less so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.publisher import HttpConnection
from bench.servers import (
    HOST,
    Process,
    ServerSpec,
    free_port,
    server_command,
    start_redis,
    wait_http_ok,
)
from bench.sse_client import Subscriber

SERVER_CORES, LOAD_CORES = "0", {1}


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Load:
    """The users' streams and the publishing connections, in this process's loop."""

    def __init__(self, port: int, users: int, publishers: int) -> None:
        self.port = port
        self.users = users
        self.publishers = publishers
        self.streams: list[Subscriber] = []
        self.delivered = 0
        self.next_n = 0

    def _frames(self, count: int) -> None:
        self.delivered += count

    async def open_streams(self) -> None:
        loop = asyncio.get_running_loop()
        for k in range(self.users):
            request = (f"GET /sse/user/u{k} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                       "Accept: text/event-stream\r\n\r\n").encode()
            _, stream = await loop.create_connection(
                lambda request=request: Subscriber(request, True, self._frames), HOST,
                self.port)
            await stream.established
            self.streams.append(stream)

    async def _connections(self) -> list[HttpConnection]:
        loop = asyncio.get_running_loop()
        return [(await loop.create_connection(HttpConnection, HOST, self.port))[1]
                for _ in range(self.publishers)]

    def _post(self, path: str, body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body

    async def publish_round(self, seconds: float, confirm: bool) -> dict:
        """Publish back to back for ``seconds``; returns the round's figures."""
        metadata = b',"metadata":{"require_ack":true}' if confirm else b""
        latencies: list[float] = []
        ids: list[tuple[int, str]] = []
        errors = 0
        for stream in self.streams:
            stream.latencies.clear()
        delivered_before = self.delivered
        end = time.time() + seconds

        async def loop(conn: HttpConnection) -> None:
            nonlocal errors
            while time.time() < end:
                n = self.next_n
                self.next_n += 1
                user = n % self.users
                body = (b'{"type":"info","service":"bench","target":{"user_id":"u%d"},'
                        b'"data":{"n":%d,"t":%.6f}%s}' % (user, n, time.time(), metadata))
                started = time.perf_counter()
                status, reply, _ = await conn.request(
                    self._post("/api/v1/messages/send", body), b"")
                latencies.append(time.perf_counter() - started)
                if status != 202:
                    errors += 1
                elif confirm:
                    ids.append((user, json.loads(reply)["id"]))

        started = time.time()
        connections = await self._connections()
        await asyncio.gather(*(loop(conn) for conn in connections))
        elapsed = time.time() - started
        await asyncio.sleep(0.5)  # frames still on their way
        for conn in connections:
            conn.transport.close()
        delivery = [value for stream in self.streams for value in stream.latencies]
        return {"published": len(latencies), "errors": errors, "seconds": elapsed,
                "publish_latencies": latencies, "delivery_latencies": delivery,
                "delivered": self.delivered - delivered_before, "ids": ids}

    async def acknowledge(self, ids: list[tuple[int, str]], seconds: float) -> dict:
        """Each user acknowledges what it got, closed loop, one id per request."""
        queue = list(ids)
        latencies: list[float] = []
        errors = 0
        end = time.time() + seconds

        async def loop(conn: HttpConnection) -> None:
            nonlocal errors
            while queue and time.time() < end:
                user, message_id = queue.pop()
                started = time.perf_counter()
                status, _, _ = await conn.request(
                    self._post(f"/api/v1/messages/{message_id}/ack?user_id=u{user}", b"{}"),
                    b"")
                latencies.append(time.perf_counter() - started)
                errors += status != 200

        started = time.time()
        connections = await self._connections()
        await asyncio.gather(*(loop(conn) for conn in connections))
        elapsed = time.time() - started
        for conn in connections:
            conn.transport.close()
        return {"acknowledged": len(latencies), "errors": errors, "seconds": elapsed,
                "latencies": latencies}


def _summary(rounds: list[dict]) -> dict:
    """Per kind: the median of the rounds' rates, and latencies over every round."""
    rates = [r["published"] / r["seconds"] for r in rounds]
    delivered = [r["delivered"] / r["seconds"] for r in rounds]
    publish = [v for r in rounds for v in r["publish_latencies"]]
    delivery = [v for r in rounds for v in r["delivery_latencies"]]
    return {
        "publishes_per_s": round(statistics.median(rates), 1),
        "publish_p50_ms": round(_percentile(publish, 0.5) * 1000, 2),
        "publish_p99_ms": round(_percentile(publish, 0.99) * 1000, 2),
        "frames_per_s": round(statistics.median(delivered), 1),
        "delivery_p50_ms": round(_percentile(delivery, 0.5) * 1000, 2),
        "delivery_p99_ms": round(_percentile(delivery, 0.99) * 1000, 2),
        "errors": sum(r["errors"] for r in rounds),
    }


async def _run(port: int, args: argparse.Namespace) -> dict:
    load = Load(port, args.users, args.publishers)
    await load.open_streams()
    await load.publish_round(1.0, confirm=False)  # warm up both paths
    await load.publish_round(1.0, confirm=True)
    plain, confirmed = [], []
    for _ in range(args.rounds):
        plain.append(await load.publish_round(args.seconds, confirm=False))
        confirmed.append(await load.publish_round(args.seconds, confirm=True))
    ids = [pair for r in confirmed for pair in r["ids"]]
    acked = await load.acknowledge(ids, args.seconds * 2)
    for stream in load.streams:
        stream.transport.close()
    base, asked = _summary(plain), _summary(confirmed)
    ratios = {name: round(asked[name] / base[name], 3)
              for name in base if name != "errors" and base[name]}
    ack_rate = acked["acknowledged"] / acked["seconds"]
    return {
        "plain": base,
        "require_ack": asked,
        "require_ack_vs_plain": ratios,
        "acknowledgements": {
            "per_s": round(ack_rate, 1),
            "p50_ms": round(_percentile(acked["latencies"], 0.5) * 1000, 2),
            "p99_ms": round(_percentile(acked["latencies"], 0.99) * 1000, 2),
            "errors": acked["errors"],
            "vs_plain_publishes": round(ack_rate / base["publishes_per_s"], 3),
        },
    }


@contextmanager
def service_on_its_core(name: str, **env: str) -> Iterator[tuple[int, int]]:
    """Redis and one gevent worker on SERVER_CORES, ready, this process moved to
    LOAD_CORES; yields (Redis's port, the service's port) and stops both after. ``env``
    adds settings. No timed redelivery within a run: what is measured is publishing,
    delivering and recording."""
    os.sched_setaffinity(0, LOAD_CORES)
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as folder:
        log_dir = Path(folder)
        redis, redis_port = start_redis(SERVER_CORES, log_dir)
        server = None
        try:
            port = free_port()
            argv, server_env = server_command(ServerSpec("pushservice", cores=SERVER_CORES),
                                              port, f"redis://{HOST}:{redis_port}/0")
            server_env.update(ACK_TIMEOUT_SECONDS="3600", HEALTH_PROBE_SECONDS="0",
                              LOG_LEVEL="warning", **env)
            server = Process("pushservice", argv, server_env)
            server.start(log_dir)
            wait_http_ok(port, server, timeout_s=30)
            yield redis_port, port
        finally:
            if server is not None:
                server.stop()
            redis.stop()


def measure(args: argparse.Namespace) -> dict:
    with service_on_its_core("confirmation-cost") as (_, port):
        result = asyncio.run(_run(port, args))
    command = (".venv/bin/python -m bench.confirmation_cost "
               f"--users {args.users} --publishers {args.publishers} "
               f"--rounds {args.rounds} --seconds {args.seconds:g}")
    return {"command": command, "users": args.users, "publishers": args.publishers,
            "pinning": "service+redis on cpu 0, load on cpu 1", **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.confirmation_cost",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200, help="user streams held open")
    parser.add_argument("--publishers", type=int, default=8,
                        help="publishing connections (closed loop)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
