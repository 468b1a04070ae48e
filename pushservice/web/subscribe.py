"""Subscribe API: the Server-Sent Events endpoints.

Before a stream starts: a token (401; from the Authorization header, ``?token=`` or the
auth cookie), valid names and options (400), permission for every topic (403, naming
the refused ones). Those refusals are JSON errors: time will not cure them. A refusal
that time will cure (the instance is full, the worker not ready, Redis unavailable, the
user's own limit) is a short ``200 text/event-stream`` instead: a browser's EventSource
gives up for good on any other status, but after a stream that ends it comes back by
itself. A stream ends by itself when its token expires, with a ``closing`` frame whose
reason is ``token_expired``.
"""

from __future__ import annotations

import random

from flask import Blueprint, Response, request

from ..auth import Principal, authenticate
from ..engine.hangup import client_fd
from ..engine.sse import encode_json_frame
from ..engine.topics import is_valid_name, keyed_topic, service_topic, user_topic
from ..errors import BadRequestError, RetryLaterError
from ..message import printable
from ..settings import FLAG_WORDS
from .extension import push_service

bp = Blueprint("stream", __name__, url_prefix="/sse")

_STREAM_HEADERS = {
    # no-transform: proxies must not compress or rewrite the stream.
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}


@bp.get("/stream/<channels>")
def stream_channels(channels: str):
    """One connection for several channels: ``a,b,c`` in the path and/or ``?channel=``."""
    principal = authenticate(stream=True)
    names = [name for name in channels.split(",") if name]
    for value in request.args.getlist("channel"):
        names.extend(name for name in value.split(",") if name)
    if not names:
        raise BadRequestError("Name at least one channel.", code="invalid_channel")
    limit = push_service().settings.max_channels_per_connection
    if len(names) > limit:
        _too_many_channels(len(names), limit)
    for name in names:
        _check_name("channel", name)
    return _open_stream(principal, "stream", names, user=None)


@bp.get("/user/<user_id>")
def stream_user(user_id: str):
    """The user's own messages (topic ``user:<user_id>``)."""
    principal = authenticate(stream=True)
    _check_name("user_id", user_id)
    return _open_stream(principal, "user", [user_topic(user_id)], user=user_id)


@bp.get("/service/<service_name>")
def stream_service(service_name: str):
    """Every message published by ``service_name`` (topic ``service:<name>``)."""
    principal = authenticate(stream=True)
    _check_name("service_name", service_name)
    return _open_stream(principal, "service", [service_topic(service_name)], user=None)


def _check_name(what: str, value: str) -> None:
    longest = push_service().settings.max_name_length
    if not is_valid_name(value, longest):
        raise BadRequestError(
            f"Invalid {what}: use 1-{longest} letters, digits, '_', '-', '.', ':' or '@' "
            "(MAX_NAME_LENGTH).",
            details={"parameter": what}, code=f"invalid_{what}")


def _too_many_channels(count: int, limit: int) -> None:
    raise BadRequestError(
        f"At most {limit} channels per connection (MAX_CHANNELS_PER_CONNECTION).",
        details={"count": count, "limit": limit}, code="too_many_channels")


def _flag(name: str, default: bool) -> bool:
    """A yes/no query option; 400 for anything but 1/0, true/false, yes/no, on/off."""
    raw = request.args.get(name, "")
    if not raw:
        return default
    value = FLAG_WORDS.get(raw.lower())
    if value is None:
        raise BadRequestError(f"Invalid {name}: use 1 or 0.", details={"parameter": name},
                              code="invalid_parameter")
    return value


def _open_stream(principal: Principal, kind: str, topics: list[str],
                 user: str | None) -> Response:
    service = push_service()
    session_id = request.args.get("session_id")
    if session_id is not None:
        _check_name("session_id", session_id)
        topics.append(keyed_topic("session", session_id))
    topics = list(dict.fromkeys(topics))
    limit = service.settings.max_channels_per_connection
    if len(topics) > limit:
        _too_many_channels(len(topics), limit)
    named = _flag("named", True)
    heartbeat_events = _flag("heartbeat_events", False)
    principal.check_subscribe(topics)
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")

    service.start()
    stream = service.streams.open(
        topics, kind=kind, user=principal.subject or user, named=named,
        last_event_id=last_event_id, heartbeat_events=heartbeat_events,
        expires_at=principal.expires_at, client_fd=client_fd(request.environ),
        remote_addr=request.remote_addr, user_agent=printable(request.user_agent.string))
    response = EventStreamResponse(stream, headers=_STREAM_HEADERS, direct_passthrough=True)
    response.headers["Content-Type"] = "text/event-stream; charset=utf-8"
    return response


REFUSED_HEADER = "Pushservice-Refused"


@bp.errorhandler(RetryLaterError)
def refuse_for_now(error: RetryLaterError) -> Response:
    """A refusal that will pass, as a stream that says why and when to come back (after
    ``Retry-After`` with jitter, so that a refused crowd does not return all at once),
    then ends. Non-browser clients read the reason in ``Pushservice-Refused`` too."""
    retry_ms = int(error.retry_after * 1000 * random.uniform(0.5, 1.5))
    payload = {"reason": error.code, "retry_ms": retry_ms, "message": error.message,
               "refused": True}
    if error.details is not None:
        payload["details"] = error.details
    push_service().metrics.stream_refusals.labels(error.code).inc()
    response = ClosingResponse(encode_json_frame(payload, "closing", retry_ms=retry_ms),
                               headers=_STREAM_HEADERS)
    response.headers["Content-Type"] = "text/event-stream; charset=utf-8"
    response.headers["Retry-After"] = str(max(1, round(retry_ms / 1000)))
    response.headers[REFUSED_HEADER] = error.code
    return response


class EventStreamResponse(Response):
    """Hands the event stream to the server as the WSGI iterable itself.

    The default response wraps its body in another iterator and keeps itself, its
    headers and the parsed request alive for as long as the stream lasts; a stream
    lasts hours and a worker holds thousands, so let all of that go once the headers
    are out. The server calls the stream's ``close()`` when it ends.
    """

    def __call__(self, environ, start_response):
        app_iter, status, headers = self.get_wsgi_response(environ)
        start_response(status, headers)
        environ.pop("werkzeug.request", None)
        if app_iter is not self.response:  # HEAD: no body, so end the stream now
            self.close()
        else:
            self.response.close_connection = _connection_closer(start_response)
        return app_iter


class ClosingResponse(Response):
    """A response after which the server closes the connection: a refused client
    reconnects on a new one, which may reach another worker or instance."""

    def __call__(self, environ, start_response):
        close = _connection_closer(start_response)
        if close is not None:
            close()
        return super().__call__(environ, start_response)


def _connection_closer(start_response):
    """How to make gunicorn close this request's connection once the response ends (its
    ``start_response`` is a bound method of its response object); None elsewhere. A
    ``Connection: close`` header would not do: gunicorn drops hop-by-hop headers."""
    return getattr(getattr(start_response, "__self__", None), "force_close", None)

