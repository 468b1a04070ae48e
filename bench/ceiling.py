"""The generator's own ceiling: a blaster that streams frames as fast as the generator reads.

``python -m bench.ceiling --port P --connections C --duration-s T --frames-per-write K``
answers every GET with a chunked event stream (as gunicorn does) and its ``connected``
frame; once C streams are open it writes, round after round, K message frames (shaped
like the service's, ~200 bytes) to every connection, one chunk per write, for T seconds,
pausing while any connection's socket buffer is full so that every connection receives
the same frames. Then it prints ``{"rounds": R, "frames_per_write": K, ...}`` and keeps the
streams open until it is stopped (at most 120 s).

The runner points the subscriber processes at it exactly as at a server: the frames/s
they count per CPU-second used is the generator's ceiling. With K=1 every frame arrives
in its own read (the worst case); a larger K shows what coalesced streams cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from bench.subscribers import _install_uvloop

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _frame(n: int) -> bytes:
    message = (
        b'{"id":"msg_%d","timestamp":"2026-01-01T00:00:00.000Z","type":"info",'
        b'"service":"bench","target":{"channel":"c1"},"data":{"n":%d,"t":%.6f}}'
        % (n, n, time.time())
    )
    return b"id: %d-0\nevent: info\ndata: %s\n\n" % (n, message)


class Stream(asyncio.Protocol):
    """One accepted connection; flow control tells the blaster when to wait."""

    def __init__(self, blaster: Blaster) -> None:
        self.blaster = blaster
        self.transport: asyncio.Transport | None = None
        self._request = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._request is None:
            return
        self._request += data
        if b"\r\n\r\n" in self._request:
            self._request = None
            self.transport.write(
                HEAD + _chunk(b'retry: 3000\n\nevent: connected\ndata: {"connection_id":"x"}\n\n')
            )
            self.blaster.ready(self)

    def pause_writing(self) -> None:
        self.blaster.paused.add(self)

    def resume_writing(self) -> None:
        self.blaster.paused.discard(self)
        if not self.blaster.paused:
            self.blaster.writable.set()

    def connection_lost(self, exc) -> None:
        self.blaster.paused.discard(self)
        self.blaster.streams.discard(self)


class Blaster:
    """Accepts the streams, then writes rounds of frames to all of them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.streams: set[Stream] = set()
        self.paused: set[Stream] = set()
        self.writable = asyncio.Event()
        self.all_ready = asyncio.Event()

    def ready(self, stream: Stream) -> None:
        self.streams.add(stream)
        if len(self.streams) >= self.args.connections:
            self.all_ready.set()

    async def blast(self) -> dict:
        """Write rounds for the duration; return what was sent."""
        args = self.args
        await asyncio.wait_for(self.all_ready.wait(), 120)
        await asyncio.sleep(0.5)  # let every client see its connected frame
        started = time.time()
        deadline = started + args.duration_s
        n = 0
        while time.time() < deadline:
            if self.paused:
                self.writable.clear()
                await self.writable.wait()
            payload = _chunk(b"".join(_frame(n + k) for k in range(args.frames_per_write)))
            n += args.frames_per_write
            for stream in list(self.streams):
                stream.transport.write(payload)
            await asyncio.sleep(0)
        return {
            "event": "blasted",
            "frames": n,
            "frames_per_write": args.frames_per_write,
            "connections": len(self.streams),
            "t_first": started,
            "t_last": time.time(),
        }


async def _main(args: argparse.Namespace) -> None:
    blaster = Blaster(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Stream(blaster), args.host, args.port, backlog=4096)
    print(json.dumps({"event": "listening"}), flush=True)
    report = await blaster.blast()
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    await asyncio.sleep(120)
    server.close()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and blast."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--duration-s", type=float, default=5.0)
    p.add_argument("--frames-per-write", type=int, default=1)
    args = p.parse_args(argv)
    _install_uvloop()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
