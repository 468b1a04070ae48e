"""Subscribe API: the Server-Sent Events endpoints."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..errors import BadRequestError, ServiceUnavailableError
from ..message import is_valid_name
from ..service import current_service
from ..streaming import StreamSession, plan_resume
from ..subscription import Subscription

bp = Blueprint("stream", __name__, url_prefix="/sse")

MAX_CHANNELS_PER_CONNECTION = 100
# How long a new stream waits for a just-started worker's reader to find its position.
READY_WAIT_SECONDS = 5.0

_STREAM_HEADERS = {
    # no-transform: proxies must not compress or rewrite the stream.
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}


@bp.get("/stream/<channels>")
def stream_channels(channels: str):
    """One connection for several channels: ``a,b,c`` in the path and/or ``?channel=``."""
    names = [name for name in channels.split(",") if name]
    for value in request.args.getlist("channel"):
        names.extend(name for name in value.split(",") if name)
    if not names:
        raise BadRequestError("Name at least one channel.", code="invalid_channel")
    for name in names:
        _check_name("channel", name)
    return _open_stream("stream", names, user=None)


@bp.get("/user/<user_id>")
def stream_user(user_id: str):
    """The user's own messages (topic ``user:<user_id>``)."""
    _check_name("user_id", user_id)
    return _open_stream("user", [f"user:{user_id}"], user=user_id)


@bp.get("/service/<service_name>")
def stream_service(service_name: str):
    """Every message published by ``service_name`` (topic ``service:<name>``)."""
    _check_name("service_name", service_name)
    return _open_stream("service", [f"service:{service_name}"], user=None)


def _check_name(what: str, value: str) -> None:
    if not is_valid_name(value):
        raise BadRequestError(
            f"Invalid {what}: use 1-128 letters, digits, '_', '-', '.', ':' or '@'.",
            details={"parameter": what}, code=f"invalid_{what}")


def _flag(name: str) -> bool:
    value = request.args.get(name, "")
    return value.lower() in ("1", "true", "yes", "on")


def _open_stream(kind: str, topics: list[str], user: str | None) -> Response:
    service = current_service()
    session_id = request.args.get("session_id")
    if session_id is not None:
        _check_name("session_id", session_id)
        topics.append(f"session:{session_id}")
    topics = list(dict.fromkeys(topics))
    if len(topics) > MAX_CHANNELS_PER_CONNECTION:
        raise BadRequestError(
            f"At most {MAX_CHANNELS_PER_CONNECTION} channels per connection.",
            details={"count": len(topics)}, code="too_many_channels")
    named = request.args.get("named", "1").lower() not in ("0", "false", "no", "off")
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")

    service.start()
    if not service.hub.ready.wait(READY_WAIT_SECONDS):
        raise ServiceUnavailableError("The worker is not connected to Redis yet.",
                                      retry_after=2, code="not_ready")
    plan = plan_resume(last_event_id, service.store.stream_info)
    subscription = Subscription(
        tuple(topics), service.settings.connection_queue_size, named=named, kind=kind,
        user=user, info={"remote_addr": request.remote_addr,
                         "user_agent": request.user_agent.string[:200]})
    service.admit(subscription)
    session = StreamSession(service.hub, service.store, service.settings, subscription, plan,
                            heartbeat_events=_flag("heartbeat_events"),
                            on_close=lambda ended: service.release(ended.subscription))
    response = EventStreamResponse(session, headers=_STREAM_HEADERS, direct_passthrough=True)
    response.headers["Content-Type"] = "text/event-stream; charset=utf-8"
    return response


class EventStreamResponse(Response):
    """Hands the session to the server as the WSGI iterable itself.

    The default response wraps its body in another iterator and keeps itself, its
    headers and the parsed request alive for as long as the stream lasts; a stream
    lasts hours and a worker holds thousands, so let all of that go once the headers
    are out. The server calls ``session.close()`` when the stream ends.
    """

    def __call__(self, environ, start_response):
        app_iter, status, headers = self.get_wsgi_response(environ)
        start_response(status, headers)
        environ.pop("werkzeug.request", None)
        if app_iter is not self.response:  # HEAD: no body, so end the session now
            self.close()
        return app_iter

