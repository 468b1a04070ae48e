"""Request bodies: read whole, within a deadline and a size limit, or refused clearly.

A body is read in one place for every endpoint that takes one, so that none of them can
be held open by a client that sends its body slowly, or never, or with broken chunked
framing: each of those is answered (408 or 400, as JSON) and its connection closed,
since where the next request would start is unknown. A request whose body the endpoint
did not read at all gets its connection closed after the answer too (``BodyGuard``),
rather than gunicorn waiting for the rest of it before reading the next request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import gevent
from flask import request

from ..errors import BadRequestError, PayloadTooLargeError, RequestTimeoutError

try:  # the HTTP framing errors of gunicorn's body readers
    from gunicorn.http.errors import NoMoreData, ParseException
except ImportError:  # pragma: no cover - gunicorn is a dependency
    ParseException = NoMoreData = ()

_READ = "pushservice.body_read"
_CLOSE = "pushservice.close_connection"


def read_body(limit: int, timeout: float) -> bytes:
    """The whole request body (at most ``limit`` bytes) within ``timeout`` seconds."""
    environ = request.environ
    environ[_READ] = True
    length = request.content_length
    if length is not None and length > limit:
        _close_connection()
        _too_large(limit)
    stream = environ["wsgi.input"]
    try:
        with gevent.Timeout(max(timeout, 0.001), False):
            raw = stream.read(length) if length is not None else stream.read(limit + 1)
            if length is None and len(raw) > limit:
                _close_connection()
                _too_large(limit)
            return raw
    except (ParseException, NoMoreData, ValueError) as exc:
        _close_connection()
        raise BadRequestError("The request body's framing is broken (chunked encoding or "
                              "length): send it again, whole.", code="invalid_body") from exc
    _close_connection()
    raise RequestTimeoutError(f"The request body did not arrive within {timeout:g} s.")


def _too_large(limit: int) -> None:
    raise PayloadTooLargeError(
        f"The request body is larger than {limit} bytes (MAX_REQUEST_BYTES).",
        details={"limit": limit}, code="payload_too_large")


def _close_connection() -> None:
    close = request.environ.get(_CLOSE)
    if close is not None:
        close()


class BodyGuard:
    """WSGI middleware: lets ``read_body`` close the connection, and closes it after a
    request whose body nobody read."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        # gunicorn's start_response is a method of its response, which can be told to
        # close the connection once it is sent; other servers: nothing to do.
        close = getattr(getattr(start_response, "__self__", None), "force_close", None)
        if close is not None:
            environ[_CLOSE] = close
        result = self.app(environ, start_response)
        if close is not None and not environ.get(_READ) and _has_body(environ):
            close()
        return result


def _has_body(environ: dict) -> bool:
    return (environ.get("CONTENT_LENGTH") not in (None, "", "0")
            or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower())
