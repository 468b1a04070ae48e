"""One SSE subscriber connection as an asyncio protocol, built to count cheaply.

The stream is de-chunked (HTTP/1.1 chunked transfer coding) when the response says so,
then cut at the last complete frame (``\\n\\n``); the complete part is scanned with a few
C-level calls per read, never a Python loop per byte:

* ``\\ndata:`` occurrences count data frames, ``\\n:`` occurrences count comment lines
  (heartbeats);
* one regex pulls the bench sequence number ``n`` out of every message frame, so lost and
  duplicated frames can be told per connection;
* on latency-sampled connections the regex also pulls the send time ``t`` and the
  latency is taken against the time the read arrived.

The bench publishes ``"data": {"n": <seq>, "t": <unix time>}`` in that order, which both an
insertion-ordered and a key-sorted JSON encoder keep. Lines end in ``\\n`` (the servers
measured here never use ``\\r\\n`` inside the stream).
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array

_N_RE = re.compile(rb'"n":\s*(\d+)')
_NT_RE = re.compile(rb'"n":\s*(\d+),\s*"t":\s*([0-9.eE+-]+)')
_CONNECTED_RE = re.compile(rb"\nevent: ?connected\n")
_RETRY_RE = re.compile(rb"\nretry: ?(\d+)\n")
# A frame that never ends is a broken stream, not something to buffer forever.
_MAX_TAIL = 1 << 20


class ProtocolError(Exception):
    """The server's response is not a well-formed event stream."""


class ChunkDecoder:
    """Incremental decoder of HTTP/1.1 chunked transfer coding; feed() returns payload."""

    def __init__(self) -> None:
        self._need = 0  # payload bytes left in the current chunk
        self._skip = 0  # bytes of the CRLF that follows a chunk's payload still to skip
        self._line = b""  # an incomplete chunk-size line
        self.finished = False  # the last (zero-size) chunk was seen

    def feed(self, data: bytes) -> bytes:
        """Decode ``data`` (any split of the byte stream) and return the payload bytes in it."""
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and not self.finished:
            if self._need:
                take = min(self._need, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._need -= take
                if not self._need:
                    self._skip = 2
            elif self._skip:
                take = min(self._skip, end - pos)
                pos += take
                self._skip -= take
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self._line += data[pos:]
                    if len(self._line) > 1024:
                        raise ProtocolError("chunk-size line too long")
                    break
                line = self._line + data[pos:eol]
                self._line = b""
                pos = eol + 2
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk-size line {line[:40]!r}") from None
                if size == 0:
                    self.finished = True
                self._need = size
        if len(out) == 1:
            return out[0]
        return b"".join(out)


class Subscriber(asyncio.Protocol):
    """One SSE connection: sends the GET, counts frames, records sequence numbers.

    ``established`` resolves when the ``connected`` frame arrives (True) or the connection
    fails first (an exception). ``on_frames`` is called with the number of message frames
    of every read, so the owner can keep a running total without polling.
    """

    def __init__(self, request: bytes, sample_latency: bool, on_frames) -> None:
        self.request = request
        self.sample_latency = sample_latency
        self.on_frames = on_frames
        self.established: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.ns = array("I")  # sequence numbers received, in arrival order
        self.latencies: list[float] = []  # seconds, sampled connections only
        self.data_frames = 0  # every frame with a data line (connected included)
        self.comments = 0  # comment lines (heartbeats)
        self.closed = False
        self.close_reason = ""
        # A refusal that will pass (the service's Pushservice-Refused header): the reason,
        # and the reconnect delay its stream gave.
        self.refused: str | None = None
        self.retry_ms: int | None = None
        self._head: bytearray | None = bytearray()
        self._decoder: ChunkDecoder | None = None
        self._tail = b"\n"  # the last newline seen, so a frame's first line starts with one

    # asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            if self._head is not None:
                data = self._parse_head(data)
                if not data:
                    return
            if self._decoder is not None:
                data = self._decoder.feed(data)
                if not data:
                    return
            self._consume(data)
        except ProtocolError as exc:
            self._fail(str(exc))
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.refused and not self.close_reason:
            self.close_reason = f"refused: {self.refused}"
        if not self.close_reason:
            self.close_reason = f"closed: {exc}" if exc else "closed by server"
        self._fail(self.close_reason)

    # parsing -------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        if not self.established.done():
            self.established.set_exception(ConnectionError(reason))

    def _parse_head(self, data: bytes) -> bytes:
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > 65536:
                raise ProtocolError("response head too long")
            return b""
        head = bytes(self._head[:end]).decode("latin-1")
        rest = bytes(self._head[end + 4 :])
        self._head = None
        status_line, _, header_text = head.partition("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "200":
            raise ProtocolError(f"status {status_line[:60]!r}")
        for line in header_text.split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                self._decoder = ChunkDecoder()
            elif name.strip().lower() == "pushservice-refused":
                self.refused = value.strip()
        return rest

    def _consume(self, data: bytes) -> None:
        buf = self._tail + data
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            if len(buf) > _MAX_TAIL:
                raise ProtocolError("frame longer than 1 MiB")
            self._tail = buf
            return
        complete = buf[: cut + 2]
        self._tail = buf[cut + 1 :]
        if self.refused and self.retry_ms is None:
            retry = _RETRY_RE.search(complete)
            self.retry_ms = int(retry.group(1)) if retry else None
        self.data_frames += complete.count(b"\ndata:")
        self.comments += complete.count(b"\n:")
        if self.sample_latency:
            now = time.time()
            pairs = _NT_RE.findall(complete)
            ns = self.ns
            lat = self.latencies
            for n, t in pairs:
                ns.append(int(n))
                lat.append(now - float(t))
            count = len(pairs)
        else:
            before = len(self.ns)
            self.ns.extend(map(int, _N_RE.findall(complete)))
            count = len(self.ns) - before
        if count:
            self.on_frames(count)
        if not self.established.done() and _CONNECTED_RE.search(complete):
            self.established.set_result(True)
