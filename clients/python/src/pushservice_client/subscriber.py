"""Subscriptions: an EventSource that reconnects by itself, as an iterator.

Like a browser's EventSource it sends ``Last-Event-ID`` when it reconnects and follows
``retry:``. Unlike one it also

- follows the service's ``closing`` event (reconnect after its ``retry_ms``; after
  ``token_expired`` with a fresh token from the token callable);
- comes back after refusals that time cures: the service's ``200`` refusal stream
  (``Pushservice-Refused`` header, a ``closing`` frame with ``"refused": true``) and
  the older 503/429 answers with ``Retry-After``, each waited out with jitter, as is a
  proxy's 502/504 or a dropped connection (with growing, jittered delays while they
  repeat);
- raises refusals that time does not cure (400, 401, 403, 404) as ServiceErrors;
- surfaces ``history-lost``: raised as HistoryLostError (``history_lost="raise"``, the
  default: a gap never passes unnoticed) or yielded as an event
  (``history_lost="event"``); either way the subscription goes on from where the
  service resumed it.

The decisions live in ``Reconnect`` (no I/O); ``Subscription`` runs them with
httpx.Client, ``AsyncSubscription`` with httpx.AsyncClient.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Self
from urllib.parse import quote

import httpx

from .config import Token
from .errors import (
    AuthenticationError,
    ConfigurationError,
    HistoryLostError,
    TransportError,
    UnavailableError,
    error_from_response,
)
from .sse import Event, SSEParser

DEFAULT_RETRY_MS = 3000
MAX_RECONNECT_DELAY = 30.0
# A silence this long means the connection is dead (the service's heartbeats come
# every HEARTBEAT_INTERVAL seconds, 30 by default).
DEFAULT_READ_TIMEOUT = 75.0
HISTORY_LOST_MODES = ("raise", "event")


def stream_path(*, user: str | None = None, channels: str | Sequence[str] | None = None,
                service: str | None = None) -> str:
    """The stream endpoint for exactly one of ``user``, ``channels`` or ``service``."""
    given = [name for name, value in (("user", user), ("channels", channels),
                                      ("service", service)) if value]
    if len(given) != 1:
        raise ConfigurationError("subscribe to exactly one of user=, channels= or service=")
    if user:
        return f"/sse/user/{quote(user, safe=':@')}"
    if service:
        return f"/sse/service/{quote(service, safe='')}"
    names = [channels] if isinstance(channels, str) else list(channels or ())
    return "/sse/stream/" + ",".join(quote(name, safe=":@") for name in names)


def stream_params(*, session_id: str | None = None, named: bool | None = None,
                  heartbeat_events: bool | None = None) -> dict[str, str]:
    """The query options of a stream (only those given)."""
    params: dict[str, str] = {}
    if session_id:
        params["session_id"] = session_id
    if named is not None:
        params["named"] = "1" if named else "0"
    if heartbeat_events is not None:
        params["heartbeat_events"] = "1" if heartbeat_events else "0"
    return params


class Reconnect:
    """One subscription's state across connections, and every decision about them.

    ``max_attempts`` bounds consecutive connection attempts that do not get a stream
    going (None: keep trying forever); ``rng`` and ``clock`` are for tests.
    """

    def __init__(self, token: Token, *, last_event_id: str | None = None,
                 history_lost: str = "raise", control: bool = False,
                 max_attempts: int | None = None, rng: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if history_lost not in HISTORY_LOST_MODES:
            raise ConfigurationError("history_lost must be 'raise' or 'event'")
        self.token = token
        self.last_event_id = last_event_id or ""
        self.history_lost = history_lost
        self.control = control
        self.max_attempts = max_attempts
        self.rng = rng
        self.clock = clock
        self.retry_ms = DEFAULT_RETRY_MS
        self.failures = 0  # consecutive attempts that did not get a stream going
        self.connections = 0  # streams that got going
        self.connection: dict[str, Any] | None = None  # the latest ``connected`` data
        self.parser = SSEParser(self.last_event_id)
        self._closing: dict[str, Any] | None = None
        self._got_stream = False  # this connection's ``connected`` event arrived
        self._refused_401 = False

    # -- connecting ---------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        """Request headers of the next connection: the token, and where to resume."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache",
                   **self.token.headers()}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def start(self) -> None:
        """A connection is about to be opened: a fresh parser that knows where we are."""
        self.parser = SSEParser(self.last_event_id)
        self._closing = None
        self._got_stream = False

    def refusal(self, status: int, headers: Mapping[str, str], body: bytes) -> float:
        """The wait before trying again after an answer that is not a stream, or raise.

        400, 401, 403, 404 (and other 4xx but 408 and 429) are final and raised as
        ServiceErrors, except that a first 401 is retried at once when the token comes
        from a callable. 429 and 5xx wait their Retry-After (with jitter) or back off;
        so does a 200 that is not an event stream (a proxy's page).
        """
        content_type = headers.get("content-type", "")
        if status == 200 and "text/event-stream" not in content_type:
            return self.failed(TransportError(
                f"expected text/event-stream, got {content_type or 'no content type'}"))
        error = error_from_response(status, body, headers)
        if isinstance(error, AuthenticationError) and self.token.rotates \
                and not self._refused_401:
            self._refused_401 = True
            return 0.0
        if 400 <= status < 500 and status not in (408, 429):
            raise error
        if error.retry_after is not None:
            return self.failed(error, error.retry_after * (1 + 0.2 * self.rng()))
        return self.failed(error)

    def dropped(self, error: BaseException | None) -> float:
        """The stream ended (``error`` None: cleanly; else how it broke): the wait
        before reconnecting."""
        closing = self._closing
        if closing is not None:
            retry_ms = closing.get("retry_ms")
            seconds = (retry_ms if isinstance(retry_ms, int | float) else self.retry_ms) / 1000
            if closing.get("refused"):
                # A refusal stream: the service is busy; spread the crowd out.
                reason = str(closing.get("reason") or "refused")
                refused = UnavailableError(503, reason, str(closing.get("message") or reason),
                                           closing, seconds)
                return self.failed(refused, seconds * (1 + 0.2 * self.rng()))
            return seconds
        if self._got_stream:
            return self.retry_ms / 1000  # as a browser does after a drop
        return self.failed(error or TransportError("the stream ended before it started"))

    def failed(self, error: BaseException, wait: float | None = None) -> float:
        """An attempt did not get a stream going: the wait before the next one (``wait``,
        or a jittered delay growing from ``retry_ms`` while failures repeat). Raises
        ``error`` once ``max_attempts`` attempts in a row failed."""
        self.failures += 1
        if self.max_attempts is not None and self.failures >= self.max_attempts:
            raise error
        if wait is None:
            base = self.retry_ms / 1000
            ceiling = min(MAX_RECONNECT_DELAY, base * 2 ** (self.failures - 1))
            wait = ceiling * (0.5 + 0.5 * self.rng())  # at least half: never a tight loop
        return wait

    # -- reading ------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse ``chunk``; returns the events to hand to the caller (raises nothing:
        a history-lost event is returned, and ``deliver`` decides)."""
        out: list[Event] = []
        for raw in self.parser.feed(chunk):
            event = Event.from_raw(raw)
            if event.type == "connected":
                self._connected(event)
            elif event.type == "closing" and isinstance(event.data, dict):
                self._closing = event.data
            if event.type == "history-lost" or self.control or not event.is_control:
                out.append(event)
        if self.parser.retry_ms is not None:
            self.retry_ms = self.parser.retry_ms
        # Every id counts, also those of blocks without data (resume points).
        self.last_event_id = self.parser.last_event_id
        return out

    def _connected(self, event: Event) -> None:
        self.connection = event.data if isinstance(event.data, dict) else None
        self.connections += 1
        self.failures = 0
        self._refused_401 = False
        self._got_stream = True

    def deliver(self, event: Event) -> Event:
        """The event to yield, or raise HistoryLostError for one in "raise" mode."""
        if event.type == "history-lost" and self.history_lost == "raise":
            data = event.data if isinstance(event.data, dict) else {}
            raise HistoryLostError(str(data.get("reason", "unknown")),
                                   data.get("last_event_id"), data.get("resumes_from"), data)
        return event


def _read_timeout(read_timeout: float, connect_timeout: float) -> httpx.Timeout:
    return httpx.Timeout(connect_timeout, read=read_timeout)


class Subscription:
    """A blocking iterator of Events from one stream, reconnecting as needed.

    Use it in a ``with`` block or call ``close()``; iterating after a
    HistoryLostError continues the stream. ``last_event_id`` is where it would resume,
    ``connection`` the latest ``connected`` event's data.
    """

    def __init__(self, http: httpx.Client, path: str, params: Mapping[str, str],
                 reconnect: Reconnect, *, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 connect_timeout: float = 10.0) -> None:
        self._http = http
        self._path = path
        self._params = dict(params)
        self.state = reconnect
        self._timeout = _read_timeout(read_timeout, connect_timeout)
        self._pending: deque[Event] = deque()
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._wait = 0.0
        self._closed = False

    @property
    def last_event_id(self) -> str:
        return self.state.last_event_id

    @property
    def connection(self) -> dict[str, Any] | None:
        return self.state.connection

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        while not self._pending:
            if self._closed:
                raise StopIteration
            self._read()
        return self.state.deliver(self._pending.popleft())

    def close(self) -> None:
        """Close the connection; iteration ends."""
        self._closed = True
        self._hang_up()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _hang_up(self) -> None:
        response, self._response, self._chunks = self._response, None, None
        if response is not None:
            response.close()

    def _read(self) -> None:
        if self._chunks is None:
            self._connect()
            return
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._hang_up()
            self._wait = self.state.dropped(None)
            return
        except httpx.HTTPError as exc:
            self._hang_up()
            self._wait = self.state.dropped(exc)
            return
        self._pending.extend(self.state.feed(chunk))

    def _connect(self) -> None:
        if self._wait > 0:
            time.sleep(self._wait)
        self._wait = 0.0
        if self._closed:
            return
        state = self.state
        state.start()
        try:
            request = self._http.build_request("GET", self._path, params=self._params,
                                               headers=state.headers(), timeout=self._timeout)
            response = self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._wait = state.failed(TransportError(str(exc) or type(exc).__name__))
            return
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or "text/event-stream" not in content_type:
            try:
                body = response.read()
            except httpx.HTTPError:
                body = b""
            finally:
                response.close()
            self._wait = state.refusal(response.status_code, response.headers, body)
            return
        self._response = response
        self._chunks = response.iter_bytes()


class AsyncSubscription:
    """The asyncio flavour of Subscription: ``async for event in subscription``."""

    def __init__(self, http: httpx.AsyncClient, path: str, params: Mapping[str, str],
                 reconnect: Reconnect, *, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 connect_timeout: float = 10.0) -> None:
        self._http = http
        self._path = path
        self._params = dict(params)
        self.state = reconnect
        self._timeout = _read_timeout(read_timeout, connect_timeout)
        self._pending: deque[Event] = deque()
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._wait = 0.0
        self._closed = False

    @property
    def last_event_id(self) -> str:
        return self.state.last_event_id

    @property
    def connection(self) -> dict[str, Any] | None:
        return self.state.connection

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            await self._read()
        return self.state.deliver(self._pending.popleft())

    async def aclose(self) -> None:
        """Close the connection; iteration ends."""
        self._closed = True
        await self._hang_up()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _hang_up(self) -> None:
        response, self._response, self._chunks = self._response, None, None
        if response is not None:
            await response.aclose()

    async def _read(self) -> None:
        if self._chunks is None:
            await self._connect()
            return
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            await self._hang_up()
            self._wait = self.state.dropped(None)
            return
        except httpx.HTTPError as exc:
            await self._hang_up()
            self._wait = self.state.dropped(exc)
            return
        self._pending.extend(self.state.feed(chunk))

    async def _connect(self) -> None:
        if self._wait > 0:
            await asyncio.sleep(self._wait)
        self._wait = 0.0
        if self._closed:
            return
        state = self.state
        state.start()
        try:
            request = self._http.build_request("GET", self._path, params=self._params,
                                               headers=state.headers(), timeout=self._timeout)
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            self._wait = state.failed(TransportError(str(exc) or type(exc).__name__))
            return
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or "text/event-stream" not in content_type:
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            self._wait = state.refusal(response.status_code, response.headers, body)
            return
        self._response = response
        self._chunks = response.aiter_bytes()


__all__ = [
    "AsyncSubscription",
    "Reconnect",
    "Subscription",
    "stream_params",
    "stream_path",
]
