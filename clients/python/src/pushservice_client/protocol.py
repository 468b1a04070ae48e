"""What to send and what an answer means, without doing any I/O.

The publishing logic (retries with backoff, Retry-After, the deadline, splitting a
refused batch) is written once, as generators that yield what they need done (a
Request to send, a Sleep to wait) and receive what happened (a Reply, or a
TransportError). ``drive_sync`` runs them with httpx.Client and ``drive_async`` with
httpx.AsyncClient, so the sync and async clients behave identically.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .config import RetryPolicy, Token
from .errors import (
    AuthenticationError,
    PushError,
    ServiceError,
    TransportError,
    error_from_response,
)
from .messages import Published

try:  # optional: a faster JSON codec when the application already has it
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None

SEND_PATH = "/api/v1/messages/send"
BROADCAST_PATH = "/api/v1/messages/broadcast"
BATCH_PATH = "/api/v1/messages/batch"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (text stays as is, not \\u-escaped)."""
    if orjson is not None:
        return orjson.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def loads(body: bytes) -> Any:
    """Parse JSON bytes."""
    if orjson is not None:
        return orjson.loads(body)
    return json.loads(body)


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to make: ``path`` is relative to the base URL."""

    method: str
    path: str
    body: bytes | None = None
    params: Mapping[str, str] | None = None
    timeout: float | None = None  # None: the client's configured timeout


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this many seconds before going on."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Reply:
    """What the service answered."""

    status: int
    headers: httpx.Headers
    body: bytes


Step = Request | Sleep
Flow = Generator[Step, "Reply | TransportError | None", Any]


class Backoff:
    """Full-jitter exponential backoff within one deadline.

    ``delay(error)`` is how long to wait before the next attempt, or None when there
    is none to make: the error is final, or waiting would pass the deadline.
    """

    def __init__(self, policy: RetryPolicy, deadline_at: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.clock = clock
        self.rng = rng
        self.deadline_at = clock() + policy.deadline if deadline_at is None else deadline_at
        self.attempts = 0

    def remaining(self) -> float:
        """Seconds left before the deadline (never below 0)."""
        return max(0.0, self.deadline_at - self.clock())

    def delay(self, error: PushError) -> float | None:
        """The wait before retrying after ``error``, or None to give up with it."""
        if isinstance(error, ServiceError):
            if not error.retryable:
                return None
        elif not isinstance(error, TransportError):
            return None
        ceiling = min(self.policy.max_delay, self.policy.base_delay * 2 ** self.attempts)
        wait = self.rng() * ceiling
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            # The service said when; the jitter on top keeps callers it refused together
            # from coming back together.
            wait += retry_after
        self.attempts += 1
        if wait > self.remaining():
            return None
        return wait


def request_flow(request: Request, policy: RetryPolicy, token: Token, *,
                 deadline_at: float | None = None, timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random) -> Flow:
    """Send ``request`` until it succeeds, retrying what may be retried (connection
    errors, timeouts, 429, 502-504) with backoff until the deadline. A 401 is retried
    once at once when the token comes from a callable (it may have rotated).

    Returns the parsed JSON body of the 2xx answer (None when empty); raises the
    ServiceError or TransportError of the last attempt otherwise.
    """
    backoff = Backoff(policy, deadline_at, clock, rng)
    refreshed = False
    while True:
        # Each attempt is bounded by the time left, so the deadline holds even when the
        # service stops answering mid-request.
        attempt_timeout = timeout
        if policy.deadline > 0:
            # The first attempt gets a fair chance even when waiting in line for a free
            # connection used up the caller's time.
            floor = min(timeout, 1.0) if backoff.attempts == 0 else 0.001
            attempt_timeout = max(floor, min(timeout, backoff.remaining()))
        outcome = yield Request(request.method, request.path, request.body, request.params,
                                attempt_timeout)
        if isinstance(outcome, Reply):
            if outcome.status < 300:
                return loads(outcome.body) if outcome.body else None
            error: PushError = error_from_response(outcome.status, outcome.body,
                                                   outcome.headers)
        else:
            error = outcome  # a TransportError
        if isinstance(error, AuthenticationError) and token.rotates and not refreshed:
            refreshed = True
            continue
        wait = backoff.delay(error)
        if wait is None:
            raise error
        if wait > 0:
            yield Sleep(wait)


# -- batches ------------------------------------------------------------------------------


class Outcome:
    """One message waiting to be published and, once settled, what became of it.

    ``deadline_at`` is when its publish gives up (monotonic clock). The batch flow calls
    ``settle`` with a ``result`` (Published) or an ``error``; subclasses wake the caller.
    """

    __slots__ = ("deadline_at", "error", "message", "result")

    def __init__(self, message: dict[str, Any], deadline_at: float) -> None:
        self.message = message
        self.deadline_at = deadline_at
        self.result: Published | None = None
        self.error: BaseException | None = None


Settle = Callable[[Sequence[tuple[Outcome, Published | None, BaseException | None]]], None]


def batch_flow(items: Sequence[Outcome], policy: RetryPolicy, token: Token, settle: Settle,
               *, max_batch: list[int], timeout: float = 10.0) -> Flow:
    """Publish ``items`` in as few requests as possible and settle each one.

    Groups of up to ``max_batch[0]`` go to ``/batch`` (a single message to ``/send``).
    The service refuses a batch whole when one message is bad; then the messages its
    answer names (by index) get their own error and the others are sent again, so one
    caller's bad message never fails another's good one. A refusal that names no index
    is resolved by sending the group's messages one by one. A ``batch_too_large`` answer
    lowers ``max_batch[0]`` (shared with the caller) to the service's limit. Retried
    failures are retried with backoff until the earliest deadline of the group.
    """
    work = _chunks(list(items), max_batch[0])
    while work:
        group = work.pop(0)
        deadline_at = min(item.deadline_at for item in group)
        if len(group) == 1:
            request = Request("POST", SEND_PATH, dumps(group[0].message))
        else:
            request = Request("POST", BATCH_PATH,
                              dumps({"messages": [item.message for item in group]}))
        try:
            answer = yield from request_flow(request, policy, token, deadline_at=deadline_at,
                                             timeout=timeout)
        except ServiceError as error:
            if len(group) == 1:
                settle([(group[0], None, error)])
                continue
            limit = _batch_limit(error)
            if limit is not None and limit < len(group):
                max_batch[0] = max(1, limit)
                work[:0] = _chunks(group, max_batch[0])
                continue
            blamed = blame(error, len(group))
            if blamed is None:
                if error.status in (400, 403, 413):
                    # The refusal names no message: find the bad ones one by one.
                    work[:0] = [[item] for item in group]
                else:
                    settle([(item, None, error) for item in group])
                continue
            settle([(group[index], None, own) for index, own in blamed.items()])
            rest = [item for index, item in enumerate(group) if index not in blamed]
            if rest:
                work.insert(0, rest)
            continue
        except TransportError as error:
            settle([(item, None, error) for item in group])
            continue
        if len(group) == 1:
            settle([(group[0], Published.from_json(answer), None)])
        else:
            results = answer["results"]
            settle([(item, Published.from_json(result), None)
                    for item, result in zip(group, results, strict=True)])


def _chunks(items: list[Outcome], size: int) -> list[list[Outcome]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _batch_limit(error: ServiceError) -> int | None:
    """The service's MAX_BATCH_SIZE from a ``batch_too_large`` answer, else None."""
    if error.code != "batch_too_large" or not isinstance(error.details, dict):
        return None
    limit = error.details.get("limit")
    return limit if isinstance(limit, int) and limit > 0 else None


def blame(error: ServiceError, count: int) -> dict[int, ServiceError] | None:
    """Each message a batch refusal names, with an error of its own: ``{index: error}``.

    The service lists refusals as ``details`` entries carrying an ``index`` (a list for
    invalid or forbidden messages, one object for a message that is too large). None
    when no entry names a message of the batch.
    """
    details = error.details
    entries = details if isinstance(details, list) else [details]
    blamed: dict[int, ServiceError] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        index = entry.get("index")
        if not isinstance(index, int) or not 0 <= index < count or index in blamed:
            continue
        own = {key: value for key, value in entry.items() if key != "index"}
        code = str(entry.get("code") or error.code)
        if "errors" in own:  # validation: the message's own list of field errors
            message, details_of_one = "The message is invalid.", own["errors"]
        else:
            text = entry.get("error")
            message = str(text) if text else error.message
            details_of_one = [own] if isinstance(details, list) else own
        blamed[index] = type(error)(error.status, code, message, details_of_one,
                                    error.retry_after)
    return blamed or None


# -- drivers ------------------------------------------------------------------------------


def _transport_error(exc: httpx.HTTPError) -> TransportError:
    error = TransportError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    error.__cause__ = exc
    return error


def drive_sync(flow: Flow, http: httpx.Client, token: Token) -> Any:
    """Run ``flow`` with a blocking httpx.Client; returns what the flow returns."""
    outcome: Reply | TransportError | None = None
    while True:
        try:
            step = flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            outcome = None
            continue
        headers = {**JSON_HEADERS, **token.headers()} if step.body is not None \
            else token.headers()
        try:
            response = http.request(step.method, step.path, content=step.body,
                                    params=step.params, headers=headers,
                                    timeout=step.timeout if step.timeout else httpx.USE_CLIENT_DEFAULT)
            outcome = Reply(response.status_code, response.headers, response.content)
        except httpx.HTTPError as exc:  # connection errors, timeouts, protocol errors
            outcome = _transport_error(exc)


async def drive_async(flow: Flow, http: httpx.AsyncClient, token: Token) -> Any:
    """Run ``flow`` with an httpx.AsyncClient; returns what the flow returns."""
    outcome: Reply | TransportError | None = None
    while True:
        try:
            step = flow.send(outcome)
        except StopIteration as stop:
            return stop.value
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            outcome = None
            continue
        headers = {**JSON_HEADERS, **token.headers()} if step.body is not None \
            else token.headers()
        try:
            response = await http.request(
                step.method, step.path, content=step.body, params=step.params,
                headers=headers,
                timeout=step.timeout if step.timeout else httpx.USE_CLIENT_DEFAULT)
            outcome = Reply(response.status_code, response.headers, response.content)
        except httpx.HTTPError as exc:
            outcome = _transport_error(exc)
