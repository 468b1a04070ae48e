"""Publisher process: POSTs bench messages through the public API and reports what was accepted.

Modes (``--mode``):

* ``rate``: message ``n`` is due at ``start + n / rate``; it goes out on the first idle
  keep-alive connection (``--connections`` of them to start with, one request in flight
  each, more opened up to ``--max-connections`` when none is idle). Past that the
  schedule slips, and the achieved rate and the slip say so; messages still unsent
  ``duration * 1.5 + 5`` seconds after the start are not sent at all (``scheduled`` minus
  ``attempted``), so a slow server cannot stretch the run without bound.
* ``closed``: ``--connections`` loops send back to back for ``--duration-s`` (single sends,
  or ``--batch`` messages per request to the batch endpoint).

Every message is ``{"type": "info", "service": "bench", "target": ..., "data": {"n": n,
"t": send time}}``; the target is ``{"channel": ...}`` or ``{"user_id": ...}`` from
``--target`` (``channel:c1`` or ``user:u{k}`` with ``--targets K`` spreading ``n`` over
``u0..u(K-1)``). Prints one JSON line: counts, rates, request latencies and, per topic, the
sequence numbers the server accepted (answered 2xx).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time

from bench.subscribers import _install_uvloop


class HttpConnection(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection with one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._try_complete()

    def _try_complete(self) -> None:
        if self._waiter is None or self._waiter.done():
            return
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buf[:end]).decode("latin-1")
        length = 0
        close = False
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if len(self._buf) < end + 4 + length:
            return
        status = int(head.split(" ", 2)[1])
        body = bytes(self._buf[end + 4 : end + 4 + length])
        del self._buf[: end + 4 + length]
        self._waiter.set_result((status, body, close))

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes, bool]:
        """Send one request; return (status, body, server-will-close)."""
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head + body)
        return await self._waiter


def _item_prefixes(target: str, targets: int, services: int = 1) -> list[bytes]:
    """The constant start of every message body: message n takes ``n % len(result)``,
    whose target is ``n % targets`` and whose service is ``bench-{n // targets %
    services}`` (``bench`` when there is one)."""
    kind, _, value = target.partition(":")
    if kind == "user":
        pairs = [("user_id", value.format(k=k)) for k in range(targets)]
    else:
        pairs = [("channel", value)]
    names = ["bench"] if services <= 1 else [f"bench-{k}" for k in range(services)]
    return [
        b'{"type":"info","service":"%s","target":{"%s":"%s"},"data":{"n":'
        % (service.encode(), key.encode(), name.encode())
        for service in names
        for key, name in pairs
    ]


def _topic(n: int, target: str, targets: int) -> str:
    kind, _, value = target.partition(":")
    if kind == "user":
        return "user:" + value.format(k=n % targets)
    return value


class Publisher:
    """Runs one publishing mode and keeps the tallies."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.next_n = 0
        self.attempted = 0
        self.accepted: dict[str, list[int]] = collections.defaultdict(list)
        self.uncertain: dict[str, list[int]] = collections.defaultdict(list)
        self.errors: collections.Counter = collections.Counter()
        self.req_latencies: list[float] = []
        self.t_first = 0.0
        self.t_last = 0.0
        self.max_slip = 0.0
        self.scheduled = 0
        self.prefixes = _item_prefixes(args.target, args.targets, args.services)

    async def _connect(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(HttpConnection, self.args.host, self.args.port)
        return conn

    def _head(self, path: str, length: int) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.args.host}:{self.args.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        ).encode()

    async def _send(self, conn: HttpConnection, ns: list[int]) -> HttpConnection:
        """POST messages ``ns`` (one, or a batch); returns a usable connection."""
        args = self.args
        prefixes = self.prefixes
        count = len(prefixes)
        now = time.time()
        items = [b'%s%d,"t":%.6f}}' % (prefixes[n % count], n, now) for n in ns]
        if args.batch or args.window_ms:
            body = b'{"messages":[' + b",".join(items) + b"]}"
            path = "/api/v1/messages/batch"
        else:
            body = items[0]
            path = "/api/v1/messages/send"
        self.attempted += len(ns)
        started = time.time()
        if not self.t_first:
            self.t_first = started
        try:
            status, reply, close = await asyncio.wait_for(
                conn.request(self._head(path, len(body)), body), args.request_timeout_s
            )
        except (TimeoutError, ConnectionError, OSError) as exc:
            self.errors[f"{type(exc).__name__}"] += len(ns)
            # No answer: the server may or may not have taken these messages.
            for n in ns:
                self.uncertain[_topic(n, args.target, args.targets)].append(n)
            conn.transport.close()
            return await self._connect()
        finished = time.time()
        self.t_last = finished
        self.req_latencies.append(finished - started)
        if 200 <= status < 300:
            for n in ns:
                self.accepted[_topic(n, args.target, args.targets)].append(n)
        else:
            self.errors[f"HTTP {status}: {reply[:120].decode('utf-8', 'replace')}"] += len(ns)
        if close:
            conn.transport.close()
            return await self._connect()
        return conn

    def _take(self) -> list[int]:
        size = max(1, self.args.batch)
        ns = list(range(self.next_n, self.next_n + size))
        self.next_n += size
        return ns

    async def run_rate(self) -> None:
        """Send ``rate * duration`` messages on schedule over a pool of connections."""
        args = self.args
        idle: asyncio.Queue = asyncio.Queue()
        for _ in range(args.connections):
            idle.put_nowait(await self._connect())
        opened = args.connections
        total = int(args.rate * args.duration_s)
        start = time.time() + 0.05
        pending = set()

        async def one(conn: HttpConnection, ns: list[int]) -> None:
            idle.put_nowait(await self._send(conn, ns))

        cutoff = start + args.duration_s * 1.5 + 5
        self.scheduled = total
        if args.window_ms:
            await self._run_windows(start, total, cutoff, idle, one, pending, opened)
            return
        for i in range(total):
            due = start + i / args.rate
            if time.time() > cutoff:
                break  # a server this far behind has shown its rate; keep the run bounded
            delay = due - time.time()
            if delay > 0.001:
                await asyncio.sleep(delay)
            if idle.empty() and opened < args.max_connections:
                opened += 1
                idle.put_nowait(await self._connect())
            conn = await idle.get()
            self.max_slip = max(self.max_slip, time.time() - due)
            task = asyncio.ensure_future(one(conn, self._take()))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=args.request_timeout_s)

    async def _run_windows(self, start, total, cutoff, idle, one, pending, opened) -> None:
        """Rate mode, batched: every ``window_ms`` one batch request carries the messages
        that fell due in that window, as a service publishing at a high rate would."""
        args = self.args
        window = args.window_ms / 1000
        tick = start
        while self.next_n < total and time.time() <= cutoff:
            tick += window
            delay = tick - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due = min(total, int((time.time() - start) * args.rate) + 1)
            if due <= self.next_n:
                continue
            if idle.empty() and opened < args.max_connections:
                opened += 1
                idle.put_nowait(await self._connect())
            conn = await idle.get()
            first_due = start + self.next_n / args.rate
            self.max_slip = max(self.max_slip, time.time() - first_due - window)
            ns = list(range(self.next_n, due))
            self.next_n = due
            task = asyncio.ensure_future(one(conn, ns))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=args.request_timeout_s)

    async def run_closed(self) -> None:
        """Send back to back on every connection until the duration is up."""
        args = self.args
        deadline = time.time() + args.duration_s

        async def loop() -> None:
            conn = await self._connect()
            while time.time() < deadline:
                conn = await self._send(conn, self._take())
            conn.transport.close()

        await asyncio.gather(*(loop() for _ in range(args.connections)))

    def report(self) -> dict:
        """The tallies as one JSON-ready dict."""
        lat = sorted(self.req_latencies)

        def pct(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3) if lat else 0.0

        accepted = sum(len(v) for v in self.accepted.values())
        span = max(self.t_last - self.t_first, 1e-9)
        return {
            "event": "published",
            "scheduled": self.scheduled or self.attempted,
            "attempted": self.attempted,
            "accepted": accepted,
            "errors": dict(self.errors),
            "t_first": self.t_first,
            "t_last": self.t_last,
            "accepted_per_s": round(accepted / span, 1),
            "max_schedule_slip_ms": round(self.max_slip * 1000, 1),
            "requests": len(lat),
            "request_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
            "expect": self.accepted,
            "uncertain": self.uncertain,
        }


async def _main(args: argparse.Namespace) -> None:
    pub = Publisher(args)
    if args.mode == "rate":
        await pub.run_rate()
    else:
        await pub.run_closed()
    sys.stdout.write(json.dumps(pub.report(), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, publish, print the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=("rate", "closed"), default="rate")
    p.add_argument("--rate", type=float, default=100.0, help="messages per second (rate mode)")
    p.add_argument("--duration-s", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument(
        "--max-connections",
        type=int,
        default=64,
        help="rate mode opens more connections, up to this, rather than slip the schedule",
    )
    p.add_argument("--batch", type=int, default=0, help="messages per batch request; 0 = single")
    p.add_argument("--window-ms", type=float, default=0.0,
                   help="rate mode: send what falls due in each window as one batch request")
    p.add_argument("--target", default="channel:c1", help="channel:NAME or user:u{k}")
    p.add_argument("--targets", type=int, default=1, help="how many users u{k} spreads over")
    p.add_argument("--services", type=int, default=1,
                   help="publishing services the messages spread over (bench-{k})")
    p.add_argument("--request-timeout-s", type=float, default=30.0)
    args = p.parse_args(argv)
    _install_uvloop()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
