"""The exceptions the client raises.

Everything derives from PushError. An answer of the service that is an error becomes a
ServiceError subclass chosen by HTTP status, carrying what the service said: its body is
always ``{"error": {"code", "message", "details"}}``, and ``Retry-After`` comes along
where the service sent one.
"""

from __future__ import annotations

import json
from typing import Any

# Answers that time may cure: too many requests, and a service (or its proxy) that cannot
# serve right now.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class PushError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(PushError, ValueError):
    """The client was given options it cannot work with (a bad URL, a bad linger...)."""


class ServiceError(PushError):
    """The service answered with an error.

    ``status`` is the HTTP status, ``code`` the service's stable machine-readable code
    (``validation_failed``, ``rate_limited``, ...; ``http_<status>`` when the body was not
    the service's JSON, as from a proxy), ``message`` its human text, ``details`` what it
    added (a list or an object, None when absent), ``retry_after`` the seconds its
    ``Retry-After`` asked for (None without one).
    """

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later: 429, 502, 503 and 504 (a 500 is a
        fault that repeating would only repeat)."""
        return self.status in RETRYABLE_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """The error in the service's own shape, plus ``status`` and ``retry_after``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details},
                "status": self.status, "retry_after": self.retry_after}


class BadRequestError(ServiceError):
    """400: the request or message is invalid (``validation_failed``, ``invalid_json``...)."""


class AuthenticationError(ServiceError):
    """401: no usable token (missing, expired, forged...)."""


class PermissionDeniedError(ServiceError):
    """403: the token is fine but does not allow this."""


class NotFoundError(ServiceError):
    """404: no such endpoint or connection."""


class PayloadTooLargeError(ServiceError):
    """413: a message, a batch or the body is over the service's limits."""


class RateLimitedError(ServiceError):
    """429: too many publishes or streams; ``retry_after`` says when to come back."""


class UnavailableError(ServiceError):
    """5xx: the service cannot serve now (Redis away, full, starting, a proxy's 502...)."""


_BY_STATUS: dict[int, type[ServiceError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    429: RateLimitedError,
}


class TransportError(PushError):
    """The request did not get an answer: connection refused or reset, or a timeout.

    ``__cause__`` holds httpx's exception.
    """


class ClientClosedError(PushError):
    """The client was closed before this message could be sent."""


class HistoryLostError(PushError):
    """A resumed stream could not replay everything that was missed.

    ``reason`` is the service's (``history_trimmed``, ``stream_reset``,
    ``malformed_last_event_id``, ``unknown_position``), ``last_event_id`` what the
    subscriber resumed from, ``resumes_from`` the first event id it gets now. The
    subscription that raised it stays usable: iterate again to continue from there.
    """

    def __init__(self, reason: str, last_event_id: str | None, resumes_from: str | None,
                 data: dict[str, Any] | None = None) -> None:
        super().__init__(f"history lost ({reason}): resumed from {resumes_from!r} "
                         f"instead of after {last_event_id!r}")
        self.reason = reason
        self.last_event_id = last_event_id
        self.resumes_from = resumes_from
        self.data = data or {}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds; None when absent or not a
    number (the HTTP-date form is not used by the service and is ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_response(status: int, body: bytes, headers: Any) -> ServiceError:
    """The ServiceError for an error answer (``headers``: any mapping with ``get``)."""
    retry_after = parse_retry_after(headers.get("retry-after"))
    code, message, details = f"http_{status}", "", None
    try:
        error = json.loads(body)["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        details = error.get("details")
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not the service's JSON (a proxy's page, say): keep a readable excerpt.
        message = body[:200].decode("utf-8", "replace").strip()
    kind = _BY_STATUS.get(status)
    if kind is None:
        kind = UnavailableError if status >= 500 else ServiceError
    return kind(status, code, message or f"HTTP {status}", details, retry_after)
