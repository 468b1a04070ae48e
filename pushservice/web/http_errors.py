"""gunicorn's own error answers (a request it cannot parse: a request line or headers too
large, broken framing, an invalid method) in the service's JSON error shape, instead of
its HTML page, so that every client gets a JSON error it can read.

``install()`` replaces gunicorn's error writer in the worker process; nothing else of
gunicorn changes (it still picks the status, logs the request and closes the connection).
"""

from __future__ import annotations

import orjson

# gunicorn status -> our error code (docs/api.md lists them with the service's own).
GUNICORN_CODES = {400: "bad_request", 403: "forbidden", 414: "request_line_too_long",
          417: "expectation_failed", 431: "headers_too_large", 500: "internal_error",
          501: "not_implemented"}
_MESSAGES = {
    414: "The request line (path and query string) is too long; a token belongs in the "
         "Authorization header or the auth cookie, not in a very long ?token=.",
    431: "The request's headers are too large or too many.",
    500: "The server failed to answer this request.",
}


def json_error(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP response carrying the JSON error for gunicorn's ``status``."""
    message = _MESSAGES.get(status) or f"{reason}: {_printable(detail)}"
    body = orjson.dumps({"error": {"code": GUNICORN_CODES.get(status, "bad_request"),
                                   "message": message, "details": None}})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    return head + body


def install() -> None:
    """Make gunicorn's workers answer their own errors as JSON."""
    from gunicorn import util

    def write_error(sock, status_int, reason, mesg) -> None:
        util.write_nonblock(sock, json_error(int(status_int), reason, mesg))

    util.write_error = write_error


def _printable(text: str, limit: int = 200) -> str:
    return "".join(ch for ch in str(text)[:limit] if ch.isprintable())
