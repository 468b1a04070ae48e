"""A small Server-Sent Events client over a plain blocking socket, with no dependencies.

It shows what a client really receives: the status line and headers, then every frame
(blank-line-terminated block) as it arrives, including comment-only heartbeats and
``retry``-only frames that a browser would not dispatch. Frames are parsed as the HTML
standard says (https://html.spec.whatwg.org/multipage/server-sent-events.html): fields
``id``, ``event``, ``data``, ``retry``; lines starting with ``:`` are comments; several
``data`` lines join with "\\n"; lines end with CRLF, CR or LF. The body may be chunked
(HTTP/1.1), have a Content-Length, or run until the connection closes.

Every read is bounded: ``next_frame``, ``collect`` and ``wait_for`` take a timeout and raise
SSETimeoutError (a TimeoutError) when it passes, with what arrived so far in the message.
Blocking sockets with timeouts work the same under threads and in a plain pytest process.
"""

from __future__ import annotations

import codecs
import json
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Frame:
    """One SSE block, as parsed from the stream.

    ``id``, ``event`` and ``retry`` are None when the block had no such field (``id`` is ""
    for an empty ``id:`` line, which resets the last event id). ``data`` is None without a
    ``data`` field, else its lines joined with "\\n". ``comments`` holds the text of each
    comment line, without the colon and one leading space. ``last_event_id`` is the
    stream's last event id once this block was read: what a browser puts in
    ``MessageEvent.lastEventId``.
    """

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: tuple[str, ...] = ()
    last_event_id: str = ""

    @property
    def type(self) -> str:
        """The event type a browser dispatches: ``event`` or "message" when absent."""
        return self.event or "message"

    @property
    def dispatches(self) -> bool:
        """True when a browser's EventSource would fire an event for it (it has data)."""
        return self.data is not None

    @property
    def is_heartbeat(self) -> bool:
        """True for a comment-only keep-alive (comments, maybe an id, no event or data)."""
        return bool(self.comments) and self.data is None and self.event is None

    def json(self) -> Any:
        """``data`` parsed as JSON; ValueError when there is no data."""
        if self.data is None:
            raise ValueError(f"frame has no data: {self!r}")
        return json.loads(self.data)


class SSEParser:
    """Incremental SSE parser: feed text as it arrives, get the frames it completes.

    A block that the stream ends in the middle of is never returned, as the standard says.
    """

    def __init__(self) -> None:
        self.last_event_id = ""
        self._pending = ""
        self._after_cr = False
        self._started = False
        self._reset_block()

    def feed(self, text: str) -> list[Frame]:
        """Parse ``text`` (any fragment of the stream) and return the frames it completed."""
        if not self._started:
            if not text:
                return []
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across two reads
        if text:
            self._after_cr = False
        buffer = self._pending + text
        frames: list[Frame] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            frame = self._line(buffer[start : match.start()])
            if frame is not None:
                frames.append(frame)
            start = match.end()
            if match.group() == "\r" and start == len(buffer):
                self._after_cr = True
        self._pending = buffer[start:]
        return frames

    def _reset_block(self) -> None:
        self._id: str | None = None
        self._event: str | None = None
        self._data: list[str] | None = None
        self._retry: int | None = None
        self._comments: list[str] = []
        self._seen = False

    def _line(self, line: str) -> Frame | None:
        if not line:
            if not self._seen:
                return None
            frame = Frame(
                id=self._id,
                event=self._event,
                data=None if self._data is None else "\n".join(self._data),
                retry=self._retry,
                comments=tuple(self._comments),
                last_event_id=self.last_event_id,
            )
            self._reset_block()
            return frame
        self._seen = True
        if line.startswith(":"):
            comment = line[1:]
            self._comments.append(comment.removeprefix(" "))
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            if self._data is None:
                self._data = []
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        # Any other field is ignored, as a browser does.
        return None


class ProtocolError(Exception):
    """The server's HTTP response could not be parsed."""


class ChunkedDecoder:
    """Incremental decoder of an HTTP/1.1 chunked body: feed bytes, get the payload bytes."""

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0
        self._state = "size"
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Decode ``data`` and return the payload bytes it completed."""
        self._buffer += data
        out = bytearray()
        while not self.done:
            if self._state == "size":
                line_end = self._buffer.find(b"\r\n")
                if line_end < 0:
                    break
                size_text = self._buffer[:line_end].split(b";", 1)[0].strip()
                self._buffer = self._buffer[line_end + 2 :]
                try:
                    self._remaining = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line: {size_text!r}") from None
                self._state = "data" if self._remaining else "trailer"
            elif self._state == "data":
                if not self._buffer:
                    break
                piece = self._buffer[: self._remaining]
                out += piece
                self._buffer = self._buffer[len(piece) :]
                self._remaining -= len(piece)
                if not self._remaining:
                    self._state = "data-end"
            elif self._state == "data-end":
                if len(self._buffer) < 2:
                    break
                if self._buffer[:2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                self._buffer = self._buffer[2:]
                self._state = "size"
            else:  # trailer: header lines until an empty one
                line_end = self._buffer.find(b"\r\n")
                if line_end < 0:
                    break
                line = self._buffer[:line_end]
                self._buffer = self._buffer[line_end + 2 :]
                if not line:
                    self.done = True
        return bytes(out)


class _LengthDecoder:
    def __init__(self, length: int) -> None:
        self._remaining = length
        self.done = length == 0

    def feed(self, data: bytes) -> bytes:
        piece = data[: self._remaining]
        self._remaining -= len(piece)
        self.done = self._remaining == 0
        return piece


class _UntilCloseDecoder:
    done = False

    def feed(self, data: bytes) -> bytes:
        return data


class SSETimeoutError(TimeoutError):
    """A bounded read ended before the awaited frames arrived."""


class StreamClosedError(EOFError):
    """The server ended the stream (or the connection) before the awaited frames arrived."""


class SSEClient:
    """One SSE connection: ``SSEClient(url)`` connects and reads the response head.

    ``headers`` adds request headers (they replace the defaults of the same name);
    ``last_event_id`` sends a ``Last-Event-ID`` header. ``timeout`` bounds connecting and
    reading the head. The response is available as ``status``, ``reason`` and ``headers``
    (lower-case names). Frames are read with ``next_frame``, ``collect`` or ``wait_for``;
    each frame read is also kept in ``received``. For a response that is not a stream
    (an error, say) use ``read_body`` or ``json``. Always ``close()`` (or use ``with``).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        last_event_id: str | None = None,
        timeout: float = 10.0,
        http_version: str = "1.1",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// URLs are supported: {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request_headers = {
            "Host": f"{self.host}:{self.port}",
            "Accept": "text/event-stream",
            "Cache-Control": "no-cache",
            "User-Agent": "pushservice-tests",
        }
        if last_event_id is not None:
            request_headers["Last-Event-ID"] = last_event_id
        for name, value in (headers or {}).items():
            for existing in [k for k in request_headers if k.lower() == name.lower()]:
                del request_headers[existing]
            request_headers[name] = value
        self.request_headers = request_headers
        self.http_version = http_version

        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.received: list[Frame] = []
        self.raw_body = bytearray()  # the decoded body bytes, for byte-exact assertions
        self.closed = False  # the server ended the stream
        self.complete = False  # ... and did so cleanly (terminating chunk or full length)
        self._queue: deque[Frame] = deque()
        self._parser = SSEParser()
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._decoder: Any = None
        self._sock: socket.socket | None = None
        self._connect(timeout)

    # -- reading frames ------------------------------------------------------------------

    @property
    def last_event_id(self) -> str:
        """The last event id the stream set, "" before any: what a browser would resume from."""
        return self._parser.last_event_id

    def next_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame, waiting at most ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while not self._queue:
            if self.closed:
                raise StreamClosedError(self._explain(f"stream closed by {self.url}"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SSETimeoutError(self._explain(f"no frame within {timeout:g}s"))
            self._read(remaining)
        return self._queue.popleft()

    def frames(self, timeout: float = 5.0) -> Iterator[Frame]:
        """Yield frames until the server closes the stream; each one within ``timeout``."""
        while True:
            try:
                yield self.next_frame(timeout)
            except StreamClosedError:
                return

    def collect(
        self,
        count: int,
        timeout: float = 5.0,
        predicate: Callable[[Frame], bool] | None = None,
    ) -> list[Frame]:
        """The next ``count`` frames (only those matching ``predicate``, if given).

        ``timeout`` bounds the whole collection; frames that do not match are skipped.
        """
        deadline = time.monotonic() + timeout
        found: list[Frame] = []
        while len(found) < count:
            remaining = deadline - time.monotonic()
            try:
                frame = self.next_frame(max(remaining, 0.0))
            except (SSETimeoutError, StreamClosedError) as exc:
                raise type(exc)(f"got {len(found)} of {count} frames: {exc}") from None
            if predicate is None or predicate(frame):
                found.append(frame)
        return found

    def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """The first frame for which ``predicate`` is true; frames before it are skipped."""
        return self.collect(1, timeout, predicate)[0]

    def messages(self, count: int, timeout: float = 5.0) -> list[Frame]:
        """The next ``count`` frames that carry data, skipping heartbeats and retry frames."""
        return self.collect(count, timeout, lambda frame: frame.dispatches)

    def assert_silent(
        self, duration: float, predicate: Callable[[Frame], bool] | None = None
    ) -> None:
        """Assert that no frame (matching ``predicate``) arrives for ``duration`` seconds."""
        try:
            frame = self.wait_for(predicate or (lambda _frame: True), duration)
        except SSETimeoutError:
            return
        except StreamClosedError:
            return
        raise AssertionError(f"unexpected frame within {duration:g}s: {frame!r}")

    # -- non-stream responses ------------------------------------------------------------

    def read_body(self, timeout: float = 5.0) -> bytes:
        """The rest of the body, for a response that ends (an error, a redirect)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SSETimeoutError(f"body of {self.url} not finished within {timeout:g}s")
            self._read(remaining)
        return bytes(self.raw_body)

    def json(self, timeout: float = 5.0) -> Any:
        """The whole body parsed as JSON."""
        return json.loads(self.read_body(timeout))

    def server_closed_connection(self, timeout: float = 5.0) -> bool:
        """After the response ended: True when the server closed the connection too, False
        when it kept it alive for another request (nothing arrives within ``timeout``)."""
        if self._sock is None:
            return True
        self._sock.settimeout(timeout)
        try:
            return self._sock.recv(1) == b""
        except TimeoutError:
            return False
        except OSError:
            return True

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SSEClient {self.url} status={self.status} frames={len(self.received)}>"

    # -- internals -----------------------------------------------------------------------

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self._sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            lines = [f"GET {self.target} HTTP/{self.http_version}"]
            lines += [f"{name}: {value}" for name, value in self.request_headers.items()]
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = b""
            while b"\r\n\r\n" not in head:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SSETimeoutError(f"no response head from {self.url} within {timeout:g}s")
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    raise StreamClosedError(f"{self.url} closed before answering: {head!r}")
                head += chunk
                if len(head) > 1 << 20:
                    raise ProtocolError("response head larger than 1 MiB")
        except BaseException:
            self.close()
            raise
        head, _, rest = head.partition(b"\r\n\r\n")
        self._parse_head(head)
        self._consume(rest)

    def _parse_head(self, head: bytes) -> None:
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line: {status_line!r}")
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        for line in header_lines:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        if self.status in (204, 304) or 100 <= self.status < 200:
            self._decoder = _LengthDecoder(0)
        elif "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._decoder = ChunkedDecoder()
        elif "content-length" in self.headers:
            self._decoder = _LengthDecoder(int(self.headers["content-length"]))
        else:
            self._decoder = _UntilCloseDecoder()
        if self._decoder.done:
            self._finish(clean=True)

    def _read(self, timeout: float) -> None:
        """One recv bounded by ``timeout``; parses whatever arrived."""
        if self._sock is None:
            raise StreamClosedError(f"{self.url}: client already closed")
        self._sock.settimeout(max(timeout, 0.001))
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            return
        except ConnectionResetError:
            data = b""
        if data:
            self._consume(data)
        else:
            self._finish(clean=isinstance(self._decoder, _UntilCloseDecoder))

    def _consume(self, data: bytes) -> None:
        if self.closed or not data:
            return
        payload = self._decoder.feed(data)
        if payload:
            self.raw_body += payload
            frames = self._parser.feed(self._text.decode(payload))
            self.received.extend(frames)
            self._queue.extend(frames)
        if self._decoder.done:
            self._finish(clean=True)

    def _finish(self, *, clean: bool) -> None:
        if not self.closed:
            self._parser.feed(self._text.decode(b"", final=True))
            self.closed = True
            self.complete = clean

    def _explain(self, what: str) -> str:
        recent = self.received[-5:]
        return f"{what}; {len(self.received)} frames so far, last ones: {recent!r}"
