"""Administration: the dashboard at ``/admin/`` (its page, its event stream, the connection
table with kicks, test messages) and the registered instances.

Every view needs a token with the admin role: in ``Authorization: Bearer``, or, for the
dashboard in a browser, in the auth cookie that ``POST /admin/session`` sets for the
``/admin/`` path only (HttpOnly, SameSite=Strict, and accepted only on requests from the
service's own pages). Without one the page answers with its sign-in form (401, or 403 for
a token without the role); every other view with the JSON error. With ENABLE_AUTH=false
everything here is open, like every endpoint.
"""

from __future__ import annotations

import time
from collections import Counter
from urllib.parse import urlsplit

import orjson
from flask import Blueprint, Response, g, jsonify, request
from markupsafe import escape

from ..auth import Principal, authenticate, token_from_request
from ..errors import (
    BadRequestError,
    ForbiddenError,
    PushServiceError,
    TooManyRequestsError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from ..ops.dashboard import TOPIC_FILTER, DashboardFeed, DashboardStream
from . import connections
from .assets import STATIC_FOLDER
from .extension import push_service

bp = Blueprint("admin", __name__, url_prefix="/admin")

PAGES = STATIC_FOLDER / "admin"
COOKIE_PATH = "/admin/"
# The dashboard's own files only: no inline script or style, nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# Views that need no token: signing out.
_OPEN_ENDPOINTS = frozenset({"admin.sign_out"})
_PRINCIPAL = "pushservice_admin"


@bp.before_request
def require_admin() -> None:
    """Every view needs the admin role (401/403 otherwise); CORS preflights pass, as
    they carry no credentials."""
    if request.method == "OPTIONS" or request.endpoint in _OPEN_ENDPOINTS:
        return
    principal = _principal()
    if not principal.is_admin:
        raise ForbiddenError("This endpoint needs the admin role (claim push.roles).",
                             code="admin_required")
    setattr(g, _PRINCIPAL, principal)


def _principal() -> Principal:
    """The caller: the bearer token when there is one, else the admin cookie."""
    service = push_service()
    if not service.auth.enabled or "Authorization" in request.headers:
        return authenticate()
    token = request.cookies.get(service.auth.cookie_name)
    if token is None:
        raise UnauthorizedError("Sign in with an admin token.", code="missing_token",
                                error=None)
    _check_same_origin()
    return service.auth.verify(token)


def _check_same_origin() -> None:
    """The cookie stands for the operator only on the dashboard's own requests: another
    site's page (even one allowed by CORS_ORIGINS) cannot use it."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if (site is not None and site not in ("same-origin", "none")) or (
            origin is not None and urlsplit(origin).netloc != request.host):
        raise ForbiddenError("The admin cookie is accepted only from this service's own "
                             "pages; send the token in Authorization instead.",
                             code="cross_origin_cookie")


@bp.errorhandler(UnauthorizedError)
@bp.errorhandler(ForbiddenError)
def refuse(error: PushServiceError) -> Response:
    """The page answers with its sign-in form; the other views with the JSON error."""
    if request.endpoint == "admin.page":
        response = _page("login.html", {"<!--reason-->": str(escape(error.message))})
        response.status_code = error.status
    else:
        response = jsonify(error.body())
        response.status_code = error.status
    response.headers.update(error.headers())
    return response


@bp.after_request
def protect(response: Response) -> Response:
    """Nothing the dashboard is sent is cached or framed."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


# -- the page and signing in ---------------------------------------------------------------


@bp.get("/")
def page() -> Response:
    """The dashboard (its sign-in form for a caller who is not an admin)."""
    return _page("dashboard.html")


@bp.post("/session")
def sign_in() -> Response:
    """Keep the request's bearer token (an admin's) in the dashboard's cookie: 204."""
    principal: Principal = getattr(g, _PRINCIPAL)
    response = Response(status=204)
    token = token_from_request()
    if principal.expires_at is None or token is None:
        return response  # authentication is off, or the cookie was used: nothing to keep
    response.set_cookie(push_service().auth.cookie_name, token, **_cookie_options(),
                        max_age=max(0, int(principal.expires_at - time.time())))
    return response


@bp.delete("/session")
def sign_out() -> Response:
    """Remove the dashboard's cookie. Needs no token."""
    response = Response(status=204)
    response.delete_cookie(push_service().auth.cookie_name, **_cookie_options())
    return response


def _cookie_options() -> dict:
    return {"path": COOKIE_PATH, "httponly": True, "secure": request.is_secure,
            "samesite": "Strict"}


def _page(name: str, replacements: dict[str, str] | None = None) -> Response:
    text = (PAGES / name).read_text(encoding="utf-8")
    for marker, value in (replacements or {}).items():
        text = text.replace(marker, value)
    return Response(text, mimetype="text/html")


# -- the dashboard's data -------------------------------------------------------------------


@bp.get("/events")
def events() -> Response:
    """The dashboard's event stream: the deployment's figures every second and the
    newest messages (``?topic=`` a topic or glob: only messages with a matching topic)."""
    unknown = sorted(set(request.args) - {"topic"})
    if unknown:
        raise BadRequestError("Unknown parameter; filter the messages with topic.",
                              details={"parameters": [name[:40] for name in unknown[:5]]},
                              code="invalid_parameter")
    topic = request.args.get("topic") or None
    if topic is not None and not TOPIC_FILTER.fullmatch(topic):
        raise BadRequestError("topic must be a topic or a glob (letters, digits, "
                              "'_', '-', '.', ':', '@', '*', '?').", code="invalid_topic")
    service = push_service()
    service.start()
    principal: Principal = getattr(g, _PRINCIPAL)
    hello = {"viewer": principal.subject, "auth": service.auth.enabled,
             "instance": service.settings.instance_name, "topic": topic}
    stream = DashboardStream(DashboardFeed(service.registry, service.engine), hello,
                             topic_filter=topic, expires_at=principal.expires_at)
    response = Response(stream, mimetype="text/event-stream", direct_passthrough=True)
    response.headers["Cache-Control"] = "no-cache, no-transform"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.get("/instances")
def instances():
    """Every instance that keeps its registration alive, with its address and health URL."""
    return jsonify({"instances": push_service().registry.instances()})


# The connection API's own views, reachable with the dashboard's cookie too.
bp.add_url_rule("/connections", "connections", connections.list_connections,
                methods=["GET"])
bp.add_url_rule("/connections/<connection_id>", "close_connection",
                connections.close_connection, methods=["DELETE"])


@bp.post("/messages")
def send_test_message() -> Response:
    """Publish a test message as this service (SERVICE_NAME, source ``admin-dashboard``):
    ``type``, ``target``, ``data`` and the other message fields but ``service`` and
    ``source``. 202 with where it went, as ``POST /api/v1/messages/send``."""
    service = push_service()
    settings = service.settings
    deadline = time.monotonic() + settings.request_timeout_seconds
    body = _json_object()
    for field in ("service", "source"):
        if field in body:
            raise ValidationError("The message is invalid.", details=[
                {"field": field, "error": "set by the dashboard: test messages come from "
                                          f"{settings.service_name}, admin-dashboard"}])
    message = service.messages.build(
        {**body, "service": settings.service_name, "source": "admin-dashboard"})
    wait = service.rates.take(Counter({message.service: 1}),
                              timeout=deadline - time.monotonic())
    if wait > 0:
        raise TooManyRequestsError(
            f"{message.service} is over its publishing rate; try again shortly.",
            retry_after=wait, code="rate_limited")
    (published,) = service.publish([message], timeout=deadline - time.monotonic())
    service.metrics.count_sent("send", 1)
    return Response(orjson.dumps({"id": published.message.id,
                                  "event_id": published.event_id,
                                  "topics": published.message.topics,
                                  "duplicate": published.duplicate}),
                    status=202, mimetype="application/json")


def _json_object() -> dict:
    if request.mimetype != "application/json":
        raise UnsupportedMediaTypeError("Send the message as JSON with Content-Type: "
                                        "application/json.")
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"The body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise ValidationError("The message is invalid.", details=[
            {"field": "", "error": "a message must be a JSON object"}])
    return body
