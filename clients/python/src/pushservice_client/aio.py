"""AsyncPushClient: the asyncio client, with the same API as PushClient (awaited)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self
from urllib.parse import quote

import httpx

from .batching import AsyncBatcher
from .client import CONNECTIONS_PATH, MESSAGES_PATH, ClientOptions, connections_params
from .config import MAX_BATCH_SIZE, RetryPolicy, TokenSource
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
    drive_async,
    dumps,
    request_flow,
)
from .subscriber import (
    DEFAULT_READ_TIMEOUT,
    AsyncSubscription,
    Reconnect,
    stream_params,
    stream_path,
)


class AsyncPushClient(MessageHelpers):
    """PushClient for asyncio: every method is a coroutine, ``subscribe`` returns an
    async iterator, and concurrent ``send()`` coroutines share batches. The options are
    PushClient's. Use it in ``async with`` or ``await client.aclose()``; it belongs to
    the event loop it is first used on.
    """

    def __init__(self, base_url: str | None = None, *, token: TokenSource = None,
                 service: str | None = None, timeout: float | httpx.Timeout = 10.0,
                 deadline: float = 30.0, linger: float = 0.002,
                 max_batch_size: int = MAX_BATCH_SIZE, max_in_flight: int = 2,
                 batching: bool = True, retry: RetryPolicy | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options = ClientOptions(base_url, token, service, timeout, deadline, linger,
                                     max_batch_size, max_in_flight, batching, retry)
        self.default_service = self.options.service
        self._http = httpx.AsyncClient(transport=transport, **self.options.http_options())
        self._batcher = AsyncBatcher(self._deliver, linger=linger, max_batch=max_batch_size,
                                     max_in_flight=max_in_flight)

    @property
    def base_url(self) -> str:
        return self.options.base_url

    async def send(self, message: Mapping[str, Any]) -> Published:
        """As PushClient.send: one message, batched with concurrent coroutines."""
        options = self.options
        message = with_id(message)
        deadline_at = time.monotonic() + options.retry.deadline
        if not options.batching:
            return Published.from_json(await self._call(
                Request("POST", SEND_PATH, dumps(message)), deadline_at))
        return await self._batcher.submit(message, deadline_at)

    async def broadcast(self, message: Mapping[str, Any]) -> Published:
        """As PushClient.broadcast."""
        return Published.from_json(await self._call(
            Request("POST", BROADCAST_PATH, dumps(with_id(message)))))

    async def batch(self, messages: Iterable[Mapping[str, Any]]) -> list[Published]:
        """As PushClient.batch."""
        results: list[Published] = []
        prepared = [with_id(message) for message in messages]
        size = self.options.max_batch[0]
        for start in range(0, len(prepared), size):
            body = dumps({"messages": prepared[start:start + size]})
            answer = await self._call(Request("POST", BATCH_PATH, body))
            results.extend(Published.from_json(result) for result in answer["results"])
        return results

    async def send_many(self, messages: Iterable[Mapping[str, Any]]
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
            await drive_async(flow, self._http, options.token)
        return [item.result if item.error is None else item.error  # type: ignore[misc]
                for item in outcomes]

    def subscribe(self, *, user: str | None = None, channels: str | Sequence[str] | None = None,
                  service: str | None = None, session_id: str | None = None,
                  named: bool | None = None, heartbeat_events: bool | None = None,
                  last_event_id: str | None = None, history_lost: str = "raise",
                  control: bool = False, max_attempts: int | None = None,
                  read_timeout: float = DEFAULT_READ_TIMEOUT) -> AsyncSubscription:
        """As PushClient.subscribe, as an async iterator: ``async for event in ...``."""
        reconnect = Reconnect(self.options.token, last_event_id=last_event_id,
                              history_lost=history_lost, control=control,
                              max_attempts=max_attempts)
        return AsyncSubscription(
            self._http, stream_path(user=user, channels=channels, service=service),
            stream_params(session_id=session_id, named=named,
                          heartbeat_events=heartbeat_events),
            reconnect, read_timeout=read_timeout,
            connect_timeout=self.options.timeout.connect or 10.0)

    async def stats(self) -> dict[str, Any]:
        """As PushClient.stats."""
        return await self._call(Request("GET", CONNECTIONS_PATH + "/stats"))

    async def connections(self, *, user: str | None = None, topic: str | None = None,
                          instance: str | None = None, limit: int | None = None,
                          cursor: str | None = None) -> dict[str, Any]:
        """As PushClient.connections."""
        params = connections_params(user, topic, instance, limit, cursor)
        return await self._call(Request("GET", CONNECTIONS_PATH, params=params))

    async def kick(self, connection_id: str) -> dict[str, Any]:
        """As PushClient.kick."""
        return await self._call(Request("DELETE", f"{CONNECTIONS_PATH}/{connection_id}"))

    async def delivery_status(self, message_id: str) -> dict[str, Any]:
        """As PushClient.delivery_status."""
        return await self._call(Request("GET", f"{MESSAGES_PATH}/{quote(message_id, safe='')}"))

    async def aclose(self) -> None:
        """Send what is queued, then close the connections."""
        await self._batcher.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _call(self, request: Request, deadline_at: float | None = None) -> Any:
        options = self.options
        flow = request_flow(request, options.retry, options.token, deadline_at=deadline_at,
                            timeout=options.request_timeout)
        return await drive_async(flow, self._http, options.token)

    async def _deliver(self, items: Sequence[Outcome], settle: Any) -> None:
        options = self.options
        flow = batch_flow(items, options.retry, options.token, settle,
                          max_batch=options.max_batch, timeout=options.request_timeout)
        try:
            await drive_async(flow, self._http, options.token)
        finally:
            self._batcher.max_batch = options.max_batch[0]
