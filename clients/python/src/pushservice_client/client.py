"""PushClient: the blocking client, safe to share between threads."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self
from urllib.parse import quote

import httpx

from .batching import ThreadBatcher
from .config import (
    MAX_BATCH_SIZE,
    RetryPolicy,
    Token,
    TokenSource,
    default_service,
    make_timeout,
    resolve_url,
    user_agent,
)
from .errors import PushError
from .helpers import MessageHelpers
from .messages import Published, with_id
from .protocol import (
    BATCH_PATH,
    BROADCAST_PATH,
    SEND_PATH,
    Outcome,
    Request,
    batch_flow,
    drive_sync,
    dumps,
    request_flow,
)
from .subscriber import (
    DEFAULT_READ_TIMEOUT,
    Reconnect,
    Subscription,
    stream_params,
    stream_path,
)

CONNECTIONS_PATH = "/api/v1/connections"
MESSAGES_PATH = "/api/v1/messages"


class ClientOptions:
    """The options both clients share, checked once (see PushClient for their meaning)."""

    def __init__(self, base_url: str | None, token: TokenSource, service: str | None,
                 timeout: float | httpx.Timeout, deadline: float, linger: float,
                 max_batch_size: int, max_in_flight: int, batching: bool,
                 retry: RetryPolicy | None) -> None:
        self.base_url = resolve_url(base_url)
        self.token = Token(token)
        self.service = default_service(service)
        self.timeout = make_timeout(timeout)
        self.retry = retry or RetryPolicy(deadline=deadline)
        self.linger = linger
        self.max_batch = [max_batch_size]  # shared with batch_flow, which may lower it
        self.max_in_flight = max_in_flight
        self.batching = batching
        # The longest single wait of one request, in seconds.
        waits = (self.timeout.connect, self.timeout.read, self.timeout.write,
                 self.timeout.pool)
        self.request_timeout = max(wait for wait in waits if wait is not None)

    def http_options(self) -> dict[str, Any]:
        """Keyword arguments for httpx.Client/AsyncClient."""
        return {
            "base_url": self.base_url,
            "timeout": self.timeout,
            "headers": {"User-Agent": user_agent()},
            # One connection per batch in flight, plus room for direct calls and streams.
            "limits": httpx.Limits(max_connections=self.max_in_flight + 16,
                                   max_keepalive_connections=self.max_in_flight + 4),
        }


def connections_params(user: str | None, topic: str | None, instance: str | None,
                       limit: int | None, cursor: str | None) -> dict[str, str]:
    """The query of ``GET /api/v1/connections`` (only the filters given)."""
    given = {"user": user, "topic": topic, "instance": instance,
             "limit": None if limit is None else str(limit), "cursor": cursor}
    return {name: value for name, value in given.items() if value is not None}


class PushClient(MessageHelpers):
    """Publishes messages to pushservice and subscribes to its streams.

    ``base_url``: the service (default PUSHSERVICE_URL, else http://localhost:8089).
    ``token``: a bearer token, or a callable returning one (called for every request,
    so rotation just works); default PUSHSERVICE_TOKEN; none for a service without
    authentication. ``service``: the service name messages are published as when they
    do not name one (default PUSHSERVICE_SERVICE).

    ``timeout``: seconds for each of connect, read, write and pool of every request
    (default 10), or an httpx.Timeout. ``deadline``: how long one publish may take,
    retries included (default 30 s; 0: one attempt); ``retry`` replaces the whole
    RetryPolicy.

    Batching (``batching=True``): ``send()`` calls from concurrent threads within
    ``linger`` seconds (default 0.002) go out as one ``/batch`` request of at most
    ``max_batch_size`` messages (default 1000); ``max_in_flight`` batches (default 2)
    are sent at once. ``batching=False`` sends each message as its own request.

    ``transport``: an httpx transport (tests use httpx.MockTransport). Close the client
    (or use ``with``) to send what is queued and free its connections.
    """

    def __init__(self, base_url: str | None = None, *, token: TokenSource = None,
                 service: str | None = None, timeout: float | httpx.Timeout = 10.0,
                 deadline: float = 30.0, linger: float = 0.002,
                 max_batch_size: int = MAX_BATCH_SIZE, max_in_flight: int = 2,
                 batching: bool = True, retry: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.options = ClientOptions(base_url, token, service, timeout, deadline, linger,
                                     max_batch_size, max_in_flight, batching, retry)
        self.default_service = self.options.service
        self._http = httpx.Client(transport=transport, **self.options.http_options())
        self._batcher = ThreadBatcher(self._deliver, linger=linger,
                                      max_batch=max_batch_size, max_in_flight=max_in_flight)

    @property
    def base_url(self) -> str:
        return self.options.base_url

    # -- publishing -----------------------------------------------------------------------

    def send(self, message: Mapping[str, Any]) -> Published:
        """Publish one message (a dict in the service's format) to the topics its target
        names; returns what the service answered. Concurrent calls share batches.

        The message gets an ``id`` unless it has one, so retries are never delivered
        twice. Raises a ServiceError subclass carrying the service's ``code`` and
        ``details`` (BadRequestError for an invalid message, ...), or TransportError
        when the service could not be reached before the deadline.
        """
        options = self.options
        message = with_id(message)
        deadline_at = time.monotonic() + options.retry.deadline
        if not options.batching:
            return Published.from_json(self._call(
                Request("POST", SEND_PATH, dumps(message)), deadline_at))
        # The wait is bounded by the deadline plus the last attempt's own timeout.
        wait_limit = options.retry.deadline + options.request_timeout + 5.0
        return self._batcher.submit(message, deadline_at, wait_limit)

    def broadcast(self, message: Mapping[str, Any]) -> Published:
        """Publish one message to every connection (the token needs
        ``push.broadcast``); ``target`` may be left out."""
        return Published.from_json(self._call(
            Request("POST", BROADCAST_PATH, dumps(with_id(message)))))

    def batch(self, messages: Iterable[Mapping[str, Any]]) -> list[Published]:
        """Publish many messages in as few requests as possible (``max_batch_size``
        each), in order; returns one result per message.

        Each request is all or nothing, as the service makes it: one invalid message
        raises BadRequestError whose ``details`` list the problems by index (within
        that request), and nothing of that request is published. Messages get ids, so
        the client's own retries are safe.
        """
        results: list[Published] = []
        prepared = [with_id(message) for message in messages]
        size = self.options.max_batch[0]
        for start in range(0, len(prepared), size):
            body = dumps({"messages": prepared[start:start + size]})
            answer = self._call(Request("POST", BATCH_PATH, body))
            results.extend(Published.from_json(result) for result in answer["results"])
        return results

    def send_many(self, messages: Iterable[Mapping[str, Any]]
                  ) -> list[Published | PushError]:
        """Publish many messages in order, each judged on its own: returns, per message,
        its Published or its own error (a bad message does not stop the others).

        Messages go in batches of ``max_batch_size``, one batch at a time (so they are
        published in order); a refused batch is resent without the messages the
        service names, as ``send()`` does.
        """
        options = self.options
        outcomes = [Outcome(with_id(message), 0.0) for message in messages]

        def settle(settled: Any) -> None:
            for item, result, error in settled:
                item.result, item.error = result, error

        size = options.max_batch[0]
        for start in range(0, len(outcomes), size):
            group = outcomes[start:start + size]
            deadline_at = time.monotonic() + options.retry.deadline
            for item in group:
                item.deadline_at = deadline_at
            flow = batch_flow(group, options.retry, options.token, settle,
                              max_batch=options.max_batch, timeout=options.request_timeout)
            drive_sync(flow, self._http, options.token)
        return [item.result if item.error is None else item.error  # type: ignore[misc]
                for item in outcomes]

    # -- subscribing ------------------------------------------------------------------------

    def subscribe(self, *, user: str | None = None, channels: str | Sequence[str] | None = None,
                  service: str | None = None, session_id: str | None = None,
                  named: bool | None = None, heartbeat_events: bool | None = None,
                  last_event_id: str | None = None, history_lost: str = "raise",
                  control: bool = False, max_attempts: int | None = None,
                  read_timeout: float = DEFAULT_READ_TIMEOUT) -> Subscription:
        """A Subscription (an iterator of Events) to the stream of ``user``, ``channels``
        or ``service`` (exactly one), reconnecting by itself.

        ``session_id``, ``named`` and ``heartbeat_events`` are the stream's query
        options. ``last_event_id`` resumes after that event. ``history_lost``: "raise"
        (HistoryLostError; iterate again to go on) or "event" (yielded as an Event of
        type ``history-lost``). ``control=True`` also yields ``connected``, ``closing``
        and ``heartbeat`` events. ``max_attempts``: give up (raise) after that many
        connection attempts in a row fail (default: never). ``read_timeout``: a silence
        this long (seconds) counts as a dead connection and reconnects.
        """
        reconnect = Reconnect(self.options.token, last_event_id=last_event_id,
                              history_lost=history_lost, control=control,
                              max_attempts=max_attempts)
        return Subscription(
            self._http, stream_path(user=user, channels=channels, service=service),
            stream_params(session_id=session_id, named=named,
                          heartbeat_events=heartbeat_events),
            reconnect, read_timeout=read_timeout,
            connect_timeout=self.options.timeout.connect or 10.0)

    # -- operations (admin token) -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``GET /api/v1/connections/stats``: connections and message statistics."""
        return self._call(Request("GET", CONNECTIONS_PATH + "/stats"))

    def connections(self, *, user: str | None = None, topic: str | None = None,
                    instance: str | None = None, limit: int | None = None,
                    cursor: str | None = None) -> dict[str, Any]:
        """``GET /api/v1/connections``: one page, ``{"connections", "count",
        "next_cursor"}``; pass ``next_cursor`` back as ``cursor`` for the next."""
        params = connections_params(user, topic, instance, limit, cursor)
        return self._call(Request("GET", CONNECTIONS_PATH, params=params))

    def kick(self, connection_id: str) -> dict[str, Any]:
        """``DELETE /api/v1/connections/{id}``: close that connection wherever it is.
        Raises NotFoundError for an unknown id."""
        return self._call(Request("DELETE", f"{CONNECTIONS_PATH}/{connection_id}"))

    def delivery_status(self, message_id: str) -> dict[str, Any]:
        """``GET /api/v1/messages/{id}``: how a message published with
        ``metadata={"require_ack": True}`` went (``state``, ``written``,
        ``acknowledged_by``, ...). Raises NotFoundError for any other message."""
        return self._call(Request("GET", f"{MESSAGES_PATH}/{quote(message_id, safe='')}"))

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Send what is queued, then close the connections."""
        self._batcher.close(self.options.retry.deadline + self.options.request_timeout)
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _call(self, request: Request, deadline_at: float | None = None) -> Any:
        options = self.options
        flow = request_flow(request, options.retry, options.token, deadline_at=deadline_at,
                            timeout=options.request_timeout)
        return drive_sync(flow, self._http, options.token)

    def _deliver(self, items: Sequence[Outcome], settle: Any) -> None:
        options = self.options
        flow = batch_flow(items, options.retry, options.token, settle,
                          max_batch=options.max_batch, timeout=options.request_timeout)
        try:
            drive_sync(flow, self._http, options.token)
        finally:
            # The service may have said its batches are smaller (batch_too_large).
            self._batcher.max_batch = options.max_batch[0]
