"""Subscriber process: holds many SSE connections and reports what they received.

Run by the runner as ``python -m bench.subscribers --port P --path /sse/user/u{i}
--topic user:u{i} --first 0 --count 2000``. It speaks JSON lines: on stdout it reports
``{"event": "established", ...}`` once every connection attempt has settled, then waits
for ``{"cmd": "drain", "expect": {topic: [n, ...]}, "uncertain": {topic: [n, ...]},
"deadline_s": .., "quiet_s": ..}`` on stdin (stdin must be a pipe), waits until every
connection has its expected frames (or nothing arrived for ``quiet_s``, or ``deadline_s``
passed), and prints ``{"event": "result", ...}``. A ``{"cmd": "stop"}`` (or end of stdin)
closes every connection and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from array import array

from bench.sse_client import Subscriber


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:  # the suite still runs, slower, without it
        return "asyncio"
    uvloop.install()
    return "uvloop"


class Fleet:
    """Every connection of this process and the running total of message frames."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.subs: list[Subscriber] = []
        self.topics: list[str] = []
        self.frames = 0
        self.last_frame_at = 0.0
        self.failures: collections.Counter = collections.Counter()
        self.refusals: collections.Counter = collections.Counter()
        self.last_event_ids: list[str] = []
        if args.last_event_ids:
            with open(args.last_event_ids) as ids:
                self.last_event_ids = [line.strip() for line in ids if line.strip()]

    def _count(self, n: int) -> None:
        self.frames += n
        self.last_frame_at = time.time()

    async def _open(self, i: int, gate: asyncio.Semaphore) -> None:
        """Open connection ``i``; a refusal that will pass is followed as a browser's
        EventSource does: reconnect after the delay the refusal gave."""
        for _ in range(self.args.max_refusals + 1):
            sub = await self._attempt(i, gate)
            if sub is None or sub.refused is None or sub.established.done() and \
                    not sub.established.exception():
                return
            self.refusals[sub.refused] += 1
            await asyncio.sleep((sub.retry_ms or 1000) / 1000)
        self.failures["refused too often"] += 1

    async def _attempt(self, i: int, gate: asyncio.Semaphore) -> Subscriber | None:
        args = self.args
        path = args.path.format(i=i)
        resume = ""
        if self.last_event_ids:
            resume = f"Last-Event-ID: {self.last_event_ids[i % len(self.last_event_ids)]}\r\n"
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{resume}\r\n"
        ).encode()
        sample = args.sample_every > 0 and i % args.sample_every == 0
        async with gate:
            loop = asyncio.get_running_loop()
            try:
                _, sub = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: Subscriber(request, sample, self._count), args.host, args.port
                    ),
                    args.connect_timeout_s,
                )
            except (TimeoutError, OSError) as exc:
                self.failures[f"connect: {type(exc).__name__}"] += 1
                return None
            try:
                await asyncio.wait_for(asyncio.shield(sub.established), args.connect_timeout_s)
            except TimeoutError:
                self.failures["no connected frame in time"] += 1
            except ConnectionError as exc:
                if sub.refused is not None:
                    return sub  # not counted as a failure: the caller comes back later
                self.failures[str(exc)[:80]] += 1
            self.subs.append(sub)
            self.topics.append(args.topic.format(i=i))
            return sub

    async def open_all(self) -> dict:
        """Open every connection (at most ``--concurrency`` at a time) and report."""
        gate = asyncio.Semaphore(self.args.concurrency)
        started = time.time()
        first, count = self.args.first, self.args.count
        await asyncio.gather(*(self._open(i, gate) for i in range(first, first + count)))
        ok = sum(1 for s in self.subs if s.established.done() and not s.established.exception())
        return {
            "event": "established",
            "requested": count,
            "established": ok,
            "failed": count - ok,
            "failures": dict(self.failures),
            "refusals": dict(self.refusals),
            "started_at": started,
            "seconds": round(time.time() - started, 3),
        }

    async def drain(
        self,
        expect: dict[str, list[int]],
        deadline_s: float,
        quiet_s: float,
        uncertain: dict[str, list[int]] | None = None,
    ) -> str:
        """Wait until every frame expected has arrived ("complete"), nothing came for
        ``quiet_s`` ("quiet"), or ``deadline_s`` passed ("deadline"); return which.

        Frames of ``uncertain`` messages (their publish got no answer) may arrive too;
        "complete" waits for them as well, so that they cannot stand in for missing ones.
        """
        uncertain = uncertain or {}
        total = sum(
            len(expect.get(topic, ())) + len(uncertain.get(topic, ())) for topic in self.topics
        )
        started = time.time()
        last_total, last_change = -1, started
        while True:
            now = time.time()
            if self.frames != last_total:
                last_total, last_change = self.frames, now
            if self.frames >= total:
                return "complete"
            if now - last_change > quiet_s:
                return "quiet"
            if now - started > deadline_s:
                return "deadline"
            await asyncio.sleep(0.05)

    def result(self, expect: dict[str, list[int]]) -> dict:
        """Compare what each connection got with what it should have got."""
        expected_arrays = {topic: array("I", sorted(ns)) for topic, ns in expect.items()}
        empty = array("I")
        expected = delivered = lost = dup = unexpected = 0
        latencies: list[float] = []
        established = held = closed_early = 0
        comments_min = None
        comments = 0
        data_frames = 0
        for sub, topic in zip(self.subs, self.topics):
            ok = sub.established.done() and not sub.established.exception()
            if not ok:
                continue
            established += 1
            if sub.closed:
                closed_early += 1
            else:
                held += 1
            want = expected_arrays.get(topic, empty)
            got = sub.ns
            expected += len(want)
            delivered += len(got)
            data_frames += sub.data_frames
            comments += sub.comments
            comments_min = sub.comments if comments_min is None else min(comments_min, sub.comments)
            latencies.extend(sub.latencies)
            if got == want:
                continue
            # Concurrent publish requests may be accepted in any order: compare as sets.
            ordered = array("I", sorted(got))
            if ordered == want:
                continue
            have = collections.Counter(ordered)
            wanted = set(want)
            for n in want:
                if n not in have:
                    lost += 1
            for n, c in have.items():
                if n in wanted:
                    dup += c - 1
                else:
                    unexpected += c
        return {
            "event": "result",
            "established": established,
            "held": held,
            "closed_early": closed_early,
            "close_reasons": dict(
                collections.Counter(s.close_reason[:80] for s in self.subs if s.closed)
            ),
            "expected": expected,
            "delivered": delivered,
            "lost": lost,
            "duplicated": dup,
            "unexpected": unexpected,
            # data frames that carried no bench sequence number, the connected frames aside
            "unparsed": data_frames - delivered - established,
            "comments": comments,
            "comments_min": comments_min or 0,
            "last_frame_at": self.last_frame_at,
            "latencies": [round(x, 6) for x in latencies],
        }

    def close(self) -> None:
        """Close every connection."""
        for sub in self.subs:
            if sub.transport is not None:
                sub.transport.close()


async def _read_command(reader: asyncio.StreamReader) -> dict:
    line = await reader.readline()
    if not line:
        return {"cmd": "stop"}
    return json.loads(line)


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _main(args: argparse.Namespace, loop_name: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 30)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    fleet = Fleet(args)
    report = await fleet.open_all()
    report["loop"] = loop_name
    _emit(report)
    while True:
        cmd = await _read_command(reader)
        if cmd["cmd"] == "drain":
            expect = cmd.get("expect", {})
            ended = await fleet.drain(
                expect,
                cmd.get("deadline_s", 30.0),
                cmd.get("quiet_s", 3.0),
                cmd.get("uncertain"),
            )
            _emit({**fleet.result(expect), "drain_ended": ended})
        elif cmd["cmd"] == "stop":
            fleet.close()
            await asyncio.sleep(0.2)
            return


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, open the connections and follow the runner's commands."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True, help="URL path; {i} is the connection number")
    p.add_argument("--topic", required=True, help="topic the path subscribes to; {i} as above")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sample-every", type=int, default=1, help="latency on every k-th connection")
    p.add_argument("--concurrency", type=int, default=200, help="connection attempts in flight")
    p.add_argument("--connect-timeout-s", type=float, default=60.0)
    p.add_argument("--last-event-ids", default="",
                   help="a file of event ids; connection i resumes from line i (cycling)")
    p.add_argument("--max-refusals", type=int, default=20,
                   help="refusals a connection follows before it counts as failed")
    args = p.parse_args(argv)
    loop_name = _install_uvloop()
    asyncio.run(_main(args, loop_name))


if __name__ == "__main__":
    main()
