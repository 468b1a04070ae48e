"""``GET /openapi.json``: the OpenAPI 3.1 document of the whole HTTP API.

Generated, not written beside the code: the message's schema comes from the rules its
validator enforces (``MessageFactory.json_schema()``), limits from the running instance's
settings, and the security requirements from whether authentication is on. Every route of
the app is documented here and nothing else (tests/unit/test_openapi.py checks both ways).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from .. import __version__
from ..message import MessageFactory
from ..settings import FLAG_WORDS, Settings
from .acks_openapi import confirmation_paths, confirmation_schemas
from .admin_openapi import dashboard_paths
from .extension import push_service
from .openapi_schemas import component_schemas, error_responses, name_parameter

bp = Blueprint("openapi", __name__)

_DOCUMENT_KEY = "pushservice.openapi"

# Error codes every authenticated operation can answer, and those of a JSON body.
_AUTH = ["missing_token", "invalid_token", "token_expired", "token_not_yet_valid",
         "invalid_audience", "invalid_issuer"]
_JSON_BODY = ["invalid_json", "invalid_body", "request_timeout", "payload_too_large",
              "unsupported_media_type"]
_STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no: proxies must not buffer the stream",
}


@bp.get("/openapi.json")
def openapi_document():
    """The document (built once per app: it depends only on the settings)."""
    document = current_app.extensions.get(_DOCUMENT_KEY)
    if document is None:
        import orjson

        service = push_service()
        document = orjson.dumps(build_document(service.settings, service.messages))
        current_app.extensions[_DOCUMENT_KEY] = document
    return Response(document, mimetype="application/json")


def build_document(settings: Settings, messages: MessageFactory) -> dict[str, Any]:
    """The OpenAPI 3.1 document for an app with ``settings`` whose messages are checked
    by ``messages`` (a MessageFactory)."""
    auth = settings.enable_auth
    security = _SecurityRequirements(settings)
    description = (
        "Real-time message push over Server-Sent Events. Publishers POST messages; "
        "subscribers hold an event stream open and get them within milliseconds. Every "
        "error is JSON of one shape, `{\"error\": {\"code\", \"message\", \"details\"}}`, "
        "with a stable `code`. Limits shown are this instance's settings. "
        + ("Authentication is on: every endpoint but `/health`, the documentation and "
           "static files needs a JWT (see each operation's security)."
           if auth else "Authentication is off on this instance (ENABLE_AUTH=false): "
           "every endpoint is open and no token is needed."))
    paths = {
        **_publish_paths(settings, security),
        **confirmation_paths(settings, security.stream(), security.bearer(),
                             security.codes()),
        **_stream_paths(settings, security),
        **_auth_paths(security),
        **_connection_paths(settings, security),
        **_operation_paths(settings, security),
        **_documentation_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "pushservice", "version": __version__, "description": description},
        "tags": [{"name": name, "description": text} for name, text in (
            ("publish", "Publish messages"), ("subscribe", "Server-Sent Event streams"),
            ("confirmation", "Delivery confirmation: acknowledgements and status"),
            ("auth", "The auth cookie for browsers"),
            ("connections", "Every connection of the deployment (admin)"),
            ("admin", "Administration (admin)"), ("operations", "Health and metrics"),
            ("documentation", "This document, its reader and static files"))],
        "paths": {
            **paths,
            **dashboard_paths(paths, messages, security.bearer(),
                              [*security.codes(), "admin_required"] if auth else []),
        },
        "components": {
            "schemas": {**component_schemas(messages, settings.max_batch_size),
                        **confirmation_schemas()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "`Authorization: Bearer <token>`; what the token "
                                          "allows is in its `push` claim"},
                "token_query": {"type": "apiKey", "in": "query", "name": "token",
                                "description": "`?token=<token>`, for EventSource, which "
                                               "cannot set headers (streams only)"},
                "token_cookie": {"type": "apiKey", "in": "cookie",
                                 "name": settings.auth_cookie_name,
                                 "description": "the HttpOnly cookie that "
                                                "`POST /api/v1/auth/cookie` sets (streams "
                                                "only)"},
            },
        },
    }


class _SecurityRequirements:
    """Who may call what, in OpenAPI's terms; nothing is required when auth is off."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.enable_auth
        self.metrics_admin = settings.metrics_require_admin

    def bearer(self) -> dict[str, Any]:
        return {"security": [{"bearer": []}]} if self.enabled else {"security": []}

    def stream(self) -> dict[str, Any]:
        if not self.enabled:
            return {"security": []}
        return {"security": [{"bearer": []}, {"token_query": []}, {"token_cookie": []}]}

    def codes(self) -> list[str]:
        return list(_AUTH) if self.enabled else []


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _publish_paths(settings: Settings, security: _SecurityRequirements) -> dict[str, Any]:
    limits = (f"A message is at most {settings.max_message_bytes} bytes as stored JSON "
              f"(MAX_MESSAGE_BYTES) and its target names at most "
              f"{settings.max_topics_per_message} distinct topics; the body is at most "
              f"{settings.max_request_bytes} bytes (MAX_REQUEST_BYTES).")
    refused = [*security.codes(), "publish_forbidden", "service_mismatch", "topic_forbidden",
               *_JSON_BODY, "validation_failed", "message_too_large", "rate_limited",
               "message_id_taken", "redis_unavailable"]

    def publish(summary: str, body: str, result: str, codes: list[str],
                operation_id: str, text: str) -> dict[str, Any]:
        return {"post": {
            "tags": ["publish"], "operationId": operation_id, "summary": summary,
            "description": f"{text} {limits} Nothing is written unless the answer is 202.",
            **security.bearer(),
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref(body)}}},
            "responses": {"202": _json(_ref(result), "Accepted: stored, on its way to "
                                                     "subscribers."),
                          **error_responses(codes)},
        }}

    return {
        "/api/v1/messages/send": publish(
            "Publish one message", "Message", "Published", refused, "sendMessage",
            "Routes to the topics its target names, and to `service:<service>`."),
        "/api/v1/messages/broadcast": publish(
            "Publish one message to every connection", "BroadcastMessage", "Published",
            [*refused, "broadcast_forbidden"], "broadcastMessage",
            "Every open connection receives it (topics `[\"*\"]`); needs push.broadcast."),
        "/api/v1/messages/batch": publish(
            "Publish many messages at once", "Batch", "BatchPublished",
            [*refused, "batch_too_large"], "publishBatch",
            "Validated whole first: one bad message refuses the batch (400, its problems "
            "listed by index). A good batch is written in one round trip, all or none."),
    }


def _flag_pattern() -> str:
    """The yes/no words a query option takes, in any case (ECMA regexes have no flags)."""
    def any_case(word: str) -> str:
        return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)

    return "^(" + "|".join(any_case(word) for word in FLAG_WORDS) + ")?$"


def _stream_paths(settings: Settings, security: _SecurityRequirements) -> dict[str, Any]:
    longest = settings.max_name_length
    name = f"[A-Za-z0-9_.:@-]{{1,{longest}}}"
    flag = {"type": "string", "pattern": _flag_pattern()}
    options = [
        name_parameter("session_id", "query", "also subscribe to `session:<id>`", longest),
        {"name": "last_event_id", "in": "query", "schema": {"type": "string"},
         "description": "resume after this event id (as `Last-Event-ID` does)"},
        {"name": "named", "in": "query", "schema": {**flag, "default": "1"},
         "description": "`0`: message frames without `event:`, for `onmessage` handlers"},
        {"name": "heartbeat_events", "in": "query", "schema": {**flag, "default": "0"},
         "description": "`1`: heartbeats as `heartbeat` events instead of comments"},
        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"},
         "description": "resume after this event id; EventSource sends it when it "
                        "reconnects"},
    ]
    codes = [*security.codes(), "invalid_session_id", "invalid_parameter",
             "too_many_channels", "topic_forbidden", "not_found"]
    stream_answer = {
        "description": "The event stream. A refusal that time will cure (the instance is "
                       "full, the worker not ready, Redis away, the user's stream limit) "
                       "is also a 200 stream: one `closing` event with `refused: true`, "
                       "and the reason in the `Pushservice-Refused` header.",
        "headers": {name: {"description": text, "schema": {"type": "string"}}
                    for name, text in _STREAM_HEADERS.items()},
        "content": {"text/event-stream": {"schema": _ref("StreamEvent")}},
    }

    def stream(path_parameter: dict[str, Any], summary: str, what: str, operation_id: str,
               extra: list[dict[str, Any]] = (), extra_codes: list[str] = ()) -> dict:
        parameters = [path_parameter, *extra, *options]
        responses = {"200": stream_answer, **error_responses([*extra_codes, *codes])}
        get = {"tags": ["subscribe"], "operationId": operation_id, "summary": summary,
               "description": f"{what} Every connection also receives broadcasts. At most "
                              f"{settings.max_channels_per_connection} topics "
                              "(MAX_CHANNELS_PER_CONNECTION); heartbeats every "
                              f"{settings.heartbeat_interval:g} s.",
               **security.stream(), "parameters": parameters, "responses": responses}
        head = {**get, "operationId": operation_id + "Probe",
                "summary": summary + " (headers only)",
                "description": "The same checks and headers as GET, without a stream: "
                               "clients probe with it before reopening a refused stream.",
                "responses": {"200": {key: value for key, value in stream_answer.items()
                                      if key != "content"},
                              **error_responses([*extra_codes, *codes])}}
        return {"get": get, "head": head}

    # Names may come in the path, in ?channel= or both: at least one in all.
    names = f"^,*({name}(,+{name})*)?,*$"
    channels = {"name": "channels", "in": "path", "required": True,
                "description": "comma-separated channel names (some may come in "
                               "`?channel=` instead)",
                "schema": {"type": "string", "minLength": 1, "pattern": names},
                "example": "orders,kb:kb789"}
    more_channels = {"name": "channel", "in": "query", "style": "form", "explode": True,
                     "description": "more channels (repeat it, or comma-separate)",
                     "schema": {"type": "array", "items": {"type": "string",
                                                           "pattern": names}}}
    return {
        "/sse/stream/{channels}": stream(
            channels, "Stream channels", "Messages on the channels, in one connection.",
            "streamChannels", [more_channels], ["invalid_channel"]),
        "/sse/user/{user_id}": stream(
            name_parameter("user_id", "path", "the user", longest), "Stream a user's "
            "messages", "The user's messages (topic `user:<user_id>`).", "streamUser",
            extra_codes=["invalid_user_id"]),
        "/sse/service/{service_name}": stream(
            name_parameter("service_name", "path", "the publishing service", longest),
            "Stream a service's messages", "Every message the service publishes (topic "
            "`service:<service_name>`).", "streamService",
            extra_codes=["invalid_service_name"]),
    }


def _auth_paths(security: _SecurityRequirements) -> dict[str, Any]:
    set_cookie = {"Set-Cookie": {"description": "the HttpOnly auth cookie, once for path "
                                                "`/sse/` (streams) and once for "
                                                "`/api/v1/messages/` (acknowledgements)",
                                 "schema": {"type": "string"}}}
    return {"/api/v1/auth/cookie": {
        "post": {"tags": ["auth"], "operationId": "setAuthCookie",
                 "summary": "Trade the bearer token for the auth cookie",
                 "description": "Sets an HttpOnly cookie holding the token, until it "
                                "expires; EventSource sends it with `withCredentials`.",
                 **security.bearer(),
                 "responses": {"204": {"description": "The cookie is set (nothing is set "
                                                      "when authentication is off).",
                                       "headers": set_cookie},
                               **error_responses(security.codes())}},
        "delete": {"tags": ["auth"], "operationId": "clearAuthCookie",
                   "summary": "Remove the auth cookie", "security": [],
                   "responses": {"204": {"description": "The cookie is removed.",
                                         "headers": set_cookie}}},
    }}


def _connection_paths(settings: Settings, security: _SecurityRequirements) -> dict:
    admin = [*security.codes(), "admin_required"] if security.enabled else []
    filters = [name_parameter(name, "query", text, settings.max_name_length)
               for name, text in (("user", "only this user's connections"),
                                  ("topic", "only connections subscribed to this topic"),
                                  ("instance", "only this instance's connections"),
                                  ("cursor", "the previous page's `next_cursor`"))]
    limit = {"name": "limit", "in": "query", "description": "connections per page",
             "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}

    def admin_get(tag: str, operation_id: str, summary: str, schema: dict[str, Any],
                  codes: list[str] = (), parameters: list[dict[str, Any]] = ()) -> dict:
        operation = {"tags": [tag], "operationId": operation_id, "summary": summary,
                     **security.bearer(),
                     "responses": {"200": _json(schema, summary),
                                   **error_responses([*admin, *codes])}}
        if parameters:
            operation["parameters"] = list(parameters)
        return {"get": operation}

    return {
        "/api/v1/connections": admin_get(
            "connections", "listConnections", "Open connections, oldest first",
            _ref("ConnectionPage"),
            ["invalid_parameter", "invalid_user", "invalid_topic", "invalid_instance",
             "invalid_cursor", "invalid_limit", "redis_unavailable"], [*filters, limit]),
        "/api/v1/connections/stats": admin_get(
            "connections", "connectionStats", "Connection and message statistics",
            _ref("ConnectionStats"), ["redis_unavailable"]),
        "/api/v1/connections/{connection_id}": {"delete": {
            "tags": ["connections"], "operationId": "closeConnection",
            "summary": "Close a connection wherever it lives",
            "description": "Its client gets `closing` with reason `closed_by_operator`.",
            **security.bearer(),
            "parameters": [name_parameter("connection_id", "path", "the connection",
                                          settings.max_name_length)],
            "responses": {
                "200": _json(_ref("ConnectionClosed"), "Closed."),
                "202": _json(_ref("ConnectionClosed"), "Asked to close; its worker did not "
                                                       "confirm within 3 s."),
                **error_responses([*admin, "invalid_connection_id", "connection_not_found",
                                   "not_found", "redis_unavailable"])},
        }},
        "/admin/instances": admin_get(
            "admin", "listInstances", "The registered instances",
            {"type": "object", "required": ["instances"],
             "properties": {"instances": {"type": "array", "items": _ref("Instance")}}},
            ["redis_unavailable"]),
    }


def _operation_paths(settings: Settings, security: _SecurityRequirements) -> dict:
    metrics_codes = ["metrics_forbidden"] if settings.metrics_allowed_networks else []
    metrics_security: dict[str, Any] = {"security": []}
    if security.metrics_admin and security.enabled:
        metrics_security = security.bearer()
        metrics_codes += [*security.codes(), "admin_required"]
    return {
        "/health": {"get": {
            "tags": ["operations"], "operationId": "health", "security": [],
            "summary": "Liveness and readiness",
            "description": "200 when Redis answers, this worker's reader reads and its "
                           "delivery probes come through; 503 otherwise, with the same "
                           "document.",
            "responses": {
                "200": _json(_ref("Health"), "Ready."),
                "503": {**_json(_ref("Health"), "Not ready."), "headers": {"Retry-After": {
                    "required": True, "schema": {"type": "string"}}}},
            }}},
        "/metrics": {"get": {
            "tags": ["operations"], "operationId": "metrics", "summary": "Prometheus "
            "metrics", **metrics_security,
            "responses": {"200": {"description": "The Prometheus text format (OpenMetrics "
                                                 "when the scraper asks for it).",
                                  "content": {
                                      "text/plain": {"schema": {"type": "string"}},
                                      "application/openmetrics-text": {
                                          "schema": {"type": "string"}}}},
                          **error_responses(metrics_codes)}}},
    }


def _documentation_paths() -> dict[str, Any]:
    def document(operation_id: str, summary: str, media_type: str,
                 parameter: dict[str, Any] | None = None) -> dict[str, Any]:
        operation = {"tags": ["documentation"], "operationId": operation_id,
                     "summary": summary, "security": [],
                     "responses": {"200": {"description": summary, "content": {
                         media_type: {}}}}}
        if parameter is not None:
            operation["parameters"] = [parameter]
            operation["responses"].update(error_responses(["not_found"]))
        return {"get": operation}

    def file(name: str, text: str, example: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "description": text,
                "schema": {"type": "string"}, "example": example}

    return {
        "/openapi.json": {"get": {
            "tags": ["documentation"], "operationId": "openapi", "security": [],
            "summary": "This document (OpenAPI 3.1)",
            "responses": {"200": _json({"type": "object", "required": ["openapi", "paths"]},
                                       "The OpenAPI document.")}}},
        "/docs": document("docs", "The API's documentation page (Swagger UI)", "text/html"),
        "/docs/{asset}": document("docsAsset", "A file of the documentation page",
                                  "*/*", file("asset", "a Swagger UI file",
                                              "swagger-ui.css")),
        "/static/{filename}": document("staticFile", "The JavaScript client and other "
                                       "static files", "*/*",
                                       file("filename", "e.g. `pushservice.js`",
                                            "pushservice.js")),
    }
