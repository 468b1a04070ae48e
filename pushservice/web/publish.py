"""Publish API: send one message, broadcast one message, send a batch.

Every request goes through the same gates, in this order: a token that names a service
(401/403), a JSON body (415/413/400), valid messages (400/413), permission for every
message (403: its service is the token's, its topics match the token's patterns), the
service's rate limit (429). Only then is anything written, all of it or none.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import orjson
from flask import Blueprint, Response, request

from ..auth import Principal, authenticate
from ..errors import (
    BadRequestError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from ..message import MAX_PROBLEMS, Message, Problems, printable
from ..store import Published
from .body import read_body
from .extension import PushService, push_service

bp = Blueprint("publish", __name__, url_prefix="/api/v1/messages")


@bp.post("/send")
def send():
    """Publish one message to the topics its target names. 202 with where it went."""
    return _publish_one("send", broadcast=False)


@bp.post("/broadcast")
def broadcast():
    """Publish one message to every connection."""
    return _publish_one("broadcast", broadcast=True)


def _publish_one(endpoint: str, broadcast: bool) -> Response:
    service = push_service()
    deadline = _deadline(service)
    principal = _publisher()
    message = service.messages.build(_json_body(deadline), broadcast=broadcast)
    _admit(service, principal, [message], deadline, broadcast=broadcast)
    (published,) = service.publish([message], timeout=deadline - time.monotonic())
    service.metrics.count_sent(endpoint, 1)
    return _accepted(_describe(published))


@bp.post("/batch")
def batch():
    """Publish many messages in one round trip: all of them, or none when any is bad.

    The body is ``{"messages": [...]}`` (a bare JSON array is accepted too).
    """
    service = push_service()
    deadline = _deadline(service)
    principal = _publisher()
    body = _json_body(deadline)
    items = body.get("messages") if isinstance(body, dict) else body
    if isinstance(body, dict) and set(body) - {"messages"}:
        raise ValidationError("The batch is invalid.", details=[
            {"field": key, "error": "unknown field"} for key in sorted(set(body) - {"messages"})
        ])
    if not isinstance(items, list):
        raise ValidationError("The batch is invalid.", details=[
            {"field": "messages", "error": "must be a JSON array of messages"}])
    if not items:
        raise ValidationError("The batch is invalid.", details=[
            {"field": "messages", "error": "must hold at least one message"}])
    limit = service.settings.max_batch_size
    if len(items) > limit:
        raise PayloadTooLargeError(
            f"The batch holds {len(items)} messages; the limit is {limit} (MAX_BATCH_SIZE).",
            details={"count": len(items), "limit": limit}, code="batch_too_large")
    messages: list[Message] = []
    errors: list[dict[str, Any]] = []
    invalid = 0
    now = time.time()  # one timestamp for the batch: its messages arrived together
    for index, raw in enumerate(items):
        problems = Problems()
        try:
            message = service.messages.check(raw, problems, now=now)
        except PayloadTooLargeError as exc:
            raise PayloadTooLargeError(
                f"Message {index}: {exc.message}", details={"index": index, **exc.details},
                code=exc.code) from exc
        if problems:
            invalid += 1
            if len(errors) < MAX_PROBLEMS:
                errors.append({"index": index, "errors": problems.items})
        elif message is not None:
            messages.append(message)
    if errors:
        raise ValidationError(
            f"{invalid} of {len(items)} messages are invalid; nothing was published.",
            details=errors)
    _admit(service, principal, messages, deadline)
    results = service.publish(messages, timeout=deadline - time.monotonic())
    service.metrics.count_sent("batch", len(results))
    return _accepted({"accepted": len(results), "results": [_describe(p) for p in results]})


@bp.after_request
def count_refusals(response: Response) -> Response:
    """A refused publish counts as failed, by its error code (a bounded set)."""
    if response.status_code >= 400:
        try:
            code = orjson.loads(response.get_data())["error"]["code"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            code = str(response.status_code)
        push_service().metrics.messages_failed.labels(code).inc()
    return response


def _publisher() -> Principal:
    """The caller, who must publish as a service (401 without a token, 403 without
    ``push.service``)."""
    principal = authenticate()
    principal.check_publisher()
    return principal


def _deadline(service: PushService) -> float:
    """When the request must be answered (``time.monotonic()``): the rate limit and the
    write share REQUEST_TIMEOUT_SECONDS."""
    return time.monotonic() + service.settings.request_timeout_seconds


def _admit(service: PushService, principal: Principal, messages: list[Message],
           deadline: float, broadcast: bool = False) -> None:
    """Refuse (403) messages the caller may not publish, then charge each service's rate
    limit (429 with Retry-After when it is spent; nothing is published)."""
    principal.check_publish(messages, broadcast)
    costs = Counter(message.service for message in messages)
    wait = service.rates.take(costs, timeout=deadline - time.monotonic())
    if wait > 0:
        rate, burst = service.rates.rate, service.rates.burst
        raise TooManyRequestsError(
            f"Publishing rate exceeded for {', '.join(sorted(costs))}: at most {rate:g} "
            f"messages per second in bursts of {burst} (PUBLISH_RATE_PER_SERVICE, "
            "PUBLISH_BURST_PER_SERVICE); nothing was published.",
            retry_after=wait, details={"retry_after_seconds": round(wait, 3)},
            code="rate_limited")


# Content-Type values that need no parsing to be accepted (what clients send).
_PLAIN_JSON = frozenset({"application/json", "application/json; charset=utf-8",
                         "application/json;charset=utf-8", "application/json; charset=UTF-8"})


def _json_body(deadline: float) -> Any:
    """The request body as JSON, or the error that says what is wrong with it; the
    body must arrive before ``deadline`` (``time.monotonic()``)."""
    timeout = deadline - time.monotonic()
    if request.environ.get("CONTENT_TYPE") not in _PLAIN_JSON:
        _check_content_type()
    settings = push_service().settings
    raw = read_body(settings.max_request_bytes, timeout)
    if not raw:
        raise BadRequestError("The request body is empty; send a JSON message.",
                              code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"The body is not valid JSON: {exc}", code="invalid_json") from exc
    if _has_long_number(raw):
        # orjson reads an integer beyond 64 bits as a float, which would change the number
        # subscribers get: read such a body exactly. The message check then refuses a
        # number that JSON cannot carry exactly to every subscriber.
        body = json.loads(raw, parse_constant=_not_json)
    return body


# Every digit as "0", every other byte as a space: 19 digits in a row are then a plain
# substring, found in C about ten times faster than a regular expression scans a batch.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_NINETEEN_DIGITS = b"0" * 19


def _has_long_number(raw: bytes) -> bool:
    """19 digits in a row: maybe an integer beyond 64 bits (or just a long string of
    digits)."""
    return _NINETEEN_DIGITS in raw.translate(_DIGITS_AS_ZEROS)


def _not_json(constant: str) -> None:
    raise BadRequestError(f"The body is not valid JSON: {constant} is not a JSON value.",
                          code="invalid_json")


def _check_content_type() -> None:
    """JSON in UTF-8, or 415."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaTypeError(
            "Send the message as JSON with Content-Type: application/json.",
            details={"content_type": printable(request.content_type)})
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaTypeError(
            "JSON is UTF-8: send Content-Type: application/json without another charset.",
            details={"charset": printable(charset)})


def _describe(published: Published) -> dict[str, Any]:
    return {
        "id": published.message.id,
        "event_id": published.event_id,
        "topics": published.message.topics,  # a tuple: orjson writes it as an array
        "duplicate": published.duplicate,
    }


def _accepted(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload), status=202, mimetype="application/json")
