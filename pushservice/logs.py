"""Log lines without credentials.

Browsers pass tokens in ``?token=`` (EventSource cannot set headers), so request lines,
query strings and referrers can carry them. ``redact`` replaces token values, bearer
credentials and anything shaped like a JWT; ``RedactingFilter`` applies it to every
record a handler or logger emits (tracebacks included); ``RedactingLogger`` is gunicorn's
logger with both applied to every access-log atom and error-log line, so operators may
log the query string (``%(r)s``, ``%(q)s``, ``%({referer}i)s``, ...) safely.

Nothing here imports gevent or opens anything: gunicorn's master loads it before forking.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from urllib.parse import unquote_plus

from gunicorn.glogging import Logger, SafeAtoms

REDACTED = "[redacted]"

# token= / access_token= in a query string, also with percent-encoded letters in the name
# (werkzeug decodes them, so the service would read such a parameter as the token).
_QUERY_TOKEN = re.compile(
    r"((?:^|[?&;\s\"'])(?:access(?:_|%5f))?"
    r"(?:t|%74)(?:o|%6f)(?:k|%6b)(?:e|%65)(?:n|%6e)(?:=|%3d))[^&;#\s\"']*",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(\bbearer(?:\s|%20|\+)+)[^\s,;\"']+", re.IGNORECASE)
# Any JWT (header.payload.signature, the header being base64url JSON: "eyJ..."), wherever
# it appears: cookies, odd parameter names, error messages.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


# Query parameters whose values are logged as sent: the service's own, none of which
# carries a credential. Every other parameter's value is redacted, however its name is
# spelt (a token under a misspelt or percent-encoded name included).
LOGGED_PARAMETERS = frozenset({
    "channel", "user_id", "session_id", "last_event_id", "named", "heartbeat_events",
    "user", "topic", "instance", "worker", "kind", "limit", "cursor", "offset", "page",
})


def redact_query(query: str) -> str:
    """A query string with the value of every parameter not in LOGGED_PARAMETERS
    replaced by [redacted] (and JWT-shaped text redacted everywhere)."""
    if not query:
        return query
    parts = []
    for part in re.split(r"([&;])", query):
        name, equals, _ = part.partition("=")
        if part in ("", "&", ";") or unquote_plus(name).strip().lower() in LOGGED_PARAMETERS:
            parts.append(part)
        else:  # an unknown name's value, or a bare value that might be a token itself
            parts.append(name + "=" + REDACTED if equals else REDACTED)
    return redact("".join(parts))


def redact_target(target: str) -> str:
    """A request target (path and query) as it may be logged."""
    path, question, query = target.partition("?")
    return redact(path) + question + redact_query(query) if question else redact(path)


def redact(text: str) -> str:
    """``text`` with token values, bearer credentials and JWTs replaced by [redacted]."""
    if "=" in text or "eyJ" in text or "earer" in text:
        text = _QUERY_TOKEN.sub(r"\1" + REDACTED, text)
        text = _BEARER.sub(r"\1" + REDACTED, text)
        text = _JWT.sub(REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts each record's message, arguments and traceback before it is formatted.

    The traceback is redacted in ``exc_text``, which formatters print instead of
    formatting ``exc_info`` again; ``exc_info`` itself stays for handlers that want the
    exception object.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):
            return True  # a broken format string: the handler reports it as usual
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info))
                                     .rstrip("\n"))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def add_redacting_filter(target: logging.Logger | logging.Handler) -> None:
    """Attach one RedactingFilter to ``target`` (idempotent)."""
    if not any(isinstance(existing, RedactingFilter) for existing in target.filters):
        target.addFilter(RedactingFilter())


class RedactedAtoms(SafeAtoms):
    """gunicorn's access-log atoms, each redacted when the log format uses it."""

    def __getitem__(self, key: str):
        value = super().__getitem__(key)
        if not isinstance(value, str):
            return value
        if key == "q":
            return redact_query(value)
        if key == "r":
            method, _, rest = value.partition(" ")
            target, space, protocol = rest.rpartition(" ")
            return f"{method} {redact_target(target)}{space}{protocol}" if space else redact(value)
        return redact(value)


# The service's access-log format (gunicorn.conf.py): written directly, without building
# gunicorn's full set of atoms (every request header and environ variable) per request,
# which cost about a sixth of a short request's time in the worker.
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms pid=%(p)s'


class RedactingLogger(Logger):
    """gunicorn's logger (``logger_class``) that never writes a token."""

    atoms_wrapper_class = RedactedAtoms

    def setup(self, cfg) -> None:
        super().setup(cfg)
        # Access lines are redacted atom by atom (RedactedAtoms, or below): no filter.
        add_redacting_filter(self.error_log)

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        if self.cfg.access_log_format != ACCESS_LOG_FORMAT:
            super().access(resp, req, environ, request_time)
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        request_line = (f"{environ['REQUEST_METHOD']} {redact_target(environ['RAW_URI'])} "
                        f"{environ['SERVER_PROTOCOL']}")
        milliseconds = request_time.seconds * 1000 + request_time.microseconds // 1000
        try:
            self.access_log.info('%s "%s" %s %s %sms pid=<%s>', environ.get("REMOTE_ADDR", "-"),
                                 request_line, status, getattr(resp, "sent", None),
                                 milliseconds, os.getpid())
        except Exception:  # noqa: BLE001 - as gunicorn: a log line never fails a request
            self.error(traceback.format_exc())


def close_handlers_before_exit() -> None:
    """Flush and close every logging handler, then let logging forget them.

    Called last in a worker that exits. A handler collected during the interpreter's
    teardown has logging take its module lock to forget it; under gevent's patching that
    lock asks gevent for the current greenlet after gevent's modules are torn down, and
    every worker exit printed an ``Exception ignored in: _removeHandlerRef`` traceback.
    With logging's list of handlers empty, the teardown has nothing to take the lock for.
    Lines logged after this still go out: closing a stream handler leaves its stream open.
    """
    logging.shutdown()
    logging._handlerList.clear()  # what shutdown() and the teardown both walk
