"""The OpenAPI document's building blocks: the error answers and their codes, and the
schemas of what the service answers (publish results, stream events, connections,
health). The message itself comes from ``MessageFactory.json_schema()``; web/openapi.py
puts the paths together."""

from __future__ import annotations

from typing import Any

from ..engine.subscription import CloseReason
from ..engine.topics import name_schema
from ..message import MESSAGE_TYPES, MessageFactory

# Every error code, under the status it is answered with, and what it means. Operations
# name the codes they can answer; web/openapi.py groups them by status.
ERROR_CODES: dict[int, dict[str, str]] = {
    400: {
        "bad_request": "the request could not be read",
        "invalid_json": "the body is empty, not JSON, or JSON that cannot be read exactly",
        "invalid_body": "the body's framing (chunked encoding or length) is broken",
        "validation_failed": "a message (or the batch) breaks the rules; `details` lists "
                             "each problem by field (and by index in a batch)",
        "invalid_channel": "a channel name is not a name, or none was given",
        "invalid_user_id": "the user id is not a name",
        "invalid_session_id": "the session id is not a name",
        "invalid_service_name": "the service name is not a name",
        "invalid_parameter": "an unknown or malformed query parameter",
        "too_many_channels": "more topics than MAX_CHANNELS_PER_CONNECTION",
        "invalid_user": "the `user` filter is not a name",
        "invalid_topic": "the `topic` filter is not a name",
        "invalid_instance": "the `instance` filter is not a name",
        "invalid_cursor": "the `cursor` is not one this service gave",
        "invalid_limit": "`limit` is not an integer from 1 to 1000",
        "invalid_connection_id": "the connection id is not a name",
        "invalid_message_id": "a message id is not a name (`details.indexes` in a batch)",
    },
    401: {
        "missing_token": "no token was sent",
        "invalid_token": "the token is malformed, forged or has claims of the wrong shape",
        "token_expired": "the token has expired",
        "token_not_yet_valid": "the token's nbf or iat is in the future",
        "invalid_audience": "the token is meant for another audience",
        "invalid_issuer": "the token comes from another issuer",
    },
    403: {
        "topic_forbidden": "the token may not subscribe or publish to a topic "
                           "(`details` names them)",
        "publish_forbidden": "the token names no service to publish as (push.service)",
        "service_mismatch": "a message's service is not the token's, or it targets "
                            "another service's topic",
        "broadcast_forbidden": "the token may not broadcast (push.broadcast)",
        "admin_required": "the endpoint needs the admin role (push.roles)",
        "metrics_forbidden": "the caller's address is not in METRICS_ALLOWED_NETWORKS",
        "cross_origin_cookie": "the admin dashboard's cookie came with a request from "
                               "another site's page",
        "ack_forbidden": "a message was not for the acknowledging user (`details.ids`); "
                         "nothing was acknowledged",
        "status_forbidden": "only the service that published a message, or an admin, sees "
                            "its status",
    },
    404: {
        "not_found": "no such endpoint",
        "connection_not_found": "no such connection (it may have closed)",
        "message_not_found": "no message with this id waits for acknowledgement: unknown, "
                             "not published with require_ack, or expired "
                             "(`details.reason`)",
    },
    405: {"method_not_allowed": "the endpoint does not take this method (see `Allow`)"},
    408: {"request_timeout": "the body did not arrive within REQUEST_TIMEOUT_SECONDS"},
    409: {"conflict": "the request collides with something that exists",
          "message_id_taken": "another service's message that waits for acknowledgement "
                              "has this id; choose another"},
    413: {
        "payload_too_large": "the body is larger than MAX_REQUEST_BYTES",
        "message_too_large": "a message, stored as JSON, is larger than MAX_MESSAGE_BYTES",
        "batch_too_large": "the batch holds more than MAX_BATCH_SIZE messages",
        "too_many_ids": "more ids than MAX_ACK_BATCH_SIZE in one request",
    },
    415: {"unsupported_media_type": "the body is not JSON in UTF-8"},
    429: {"rate_limited": "the service's publish rate is spent; nothing was published"},
    500: {"internal_error": "the service hit an unexpected error (it is logged)"},
    503: {"redis_unavailable": "Redis did not answer in time; `details.written: false` "
                               "means nothing was written"},
}
STATUS_OF = {code: status for status, codes in ERROR_CODES.items() for code in codes}
STATUS_TEXT = {400: "Bad request", 401: "Unauthenticated", 403: "Forbidden",
               404: "Not found", 405: "Method not allowed", 408: "Request timeout",
               409: "Conflict", 413: "Too large",
               415: "Unsupported media type", 429: "Too many requests",
               500: "Internal error", 503: "Unavailable"}
# Headers some error statuses always carry.
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": "Bearer challenge (RFC 6750), with error= for a bad token"},
    405: {"Allow": "the methods the endpoint takes"},
    429: {"Retry-After": "seconds to wait before trying again"},
    503: {"Retry-After": "seconds to wait before trying again"},
}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "details"],
        "additionalProperties": False,
        "properties": {
            "code": {"type": "string", "description": "stable and machine-readable"},
            "message": {"type": "string", "description": "for people"},
            "details": {"description": "what exactly was wrong, or null"},
        },
    }},
}


def error_response(status: int, codes: list[str]) -> dict[str, Any]:
    """The answer for ``status`` with ``codes``: the shared error shape, its code one of
    them, and the headers this status always carries."""
    listed = "; ".join(f"`{code}`: {ERROR_CODES[status][code]}" for code in codes)
    response: dict[str, Any] = {
        "description": f"{STATUS_TEXT[status]}. {listed}.",
        "content": {"application/json": {"schema": {
            "allOf": [{"$ref": "#/components/schemas/Error"}],
            "properties": {"error": {"properties": {"code": {"enum": codes}}}},
        }}},
    }
    headers = _ERROR_HEADERS.get(status)
    if headers:
        response["headers"] = {name: {"description": text, "required": True,
                                      "schema": {"type": "string"}}
                               for name, text in headers.items()}
    return response


def error_responses(codes: list[str]) -> dict[str, Any]:
    """Error answers for ``codes``, grouped by status."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(STATUS_OF[code], []).append(code)
    return {str(status): error_response(status, listed)
            for status, listed in sorted(by_status.items())}


def _object(properties: dict[str, Any], required: list[str] | None = None,
            **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required, **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


NULLABLE_STRING = {"type": ["string", "null"]}
COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}


def stored_message_schema(factory: MessageFactory) -> dict[str, Any]:
    """A message as subscribers receive it: what was published, with ``id``,
    ``timestamp``, ``source`` and ``metadata``'s defaults filled in."""
    schema = factory.json_schema(broadcast=True)
    properties = dict(schema["properties"])
    properties["id"] = {"type": "string"}
    # A publisher's own timestamp is kept as it was sent.
    properties["timestamp"] = {"type": "string"}
    properties["metadata"] = {**properties["metadata"],
                              "required": ["priority", "ttl", "retry_count"]}
    return {**schema, "properties": properties, "required": list(properties)}


def component_schemas(factory: MessageFactory, max_batch_size: int) -> dict[str, Any]:
    """Every named schema of the document."""
    message = factory.json_schema()
    return {
        "Error": ERROR_SCHEMA,
        "Message": {**message, "description": "A message to publish."},
        "BroadcastMessage": {**factory.json_schema(broadcast=True),
                             "description": "A message to every connection: `target` is "
                                            "optional and routes nothing."},
        "Batch": {"oneOf": [
            _object({"messages": {"type": "array", "items": _ref("Message"), "minItems": 1,
                                  "maxItems": max_batch_size}},
                    additionalProperties=False),
            {"type": "array", "items": _ref("Message"), "minItems": 1,
             "maxItems": max_batch_size},
        ], "description": f"At most {max_batch_size} messages (MAX_BATCH_SIZE), all "
                          "published or none."},
        "Published": _object({
            "id": {"type": "string", "description": "the message's id"},
            "event_id": {"type": "string", "description": "its position in the stream: "
                                                          "what Last-Event-ID resumes after"},
            "topics": {"type": "array", "items": {"type": "string"}},
            "duplicate": {"type": "boolean", "description": "a message with this id was "
                                                           "already published (not again)"},
        }, additionalProperties=False),
        "BatchPublished": _object({
            "accepted": {"type": "integer", "minimum": 1},
            "results": {"type": "array", "items": _ref("Published")},
        }, additionalProperties=False),
        "StoredMessage": stored_message_schema(factory),
        **_stream_schemas(),
        **_operation_schemas(),
    }


def _stream_schemas() -> dict[str, Any]:
    def event(names: list[str], data: dict[str, Any], description: str) -> dict[str, Any]:
        return _object({
            "event": {"enum": names},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": data},
            "id": {"type": "string"},
            "retry": {"type": "integer", "minimum": 0},
        }, required=["event", "data"], description=description)

    closing_reasons = [CloseReason.SHUTDOWN, CloseReason.SLOW_CONSUMER,
                       CloseReason.REPLAY_LIMIT, CloseReason.KICKED,
                       CloseReason.TOKEN_EXPIRED, "unavailable", "too_many_connections",
                       "not_ready", "redis_unavailable", "too_many_user_connections"]
    return {
        "StreamEvent": {
            "description": "One event of the stream (`data:` is one line of JSON). Comment "
                           "heartbeats (`: heartbeat`) are not events.",
            "oneOf": [
                event(["connected"], _object({
                    "connection_id": {"type": "string"},
                    "instance": {"type": "string"},
                    "worker": {"type": "integer"},
                    "topics": {"type": "array", "items": {"type": "string"}},
                    "heartbeat_interval": {"type": "number"},
                    "last_event_id": {"type": "string"},
                }, required=["connection_id", "instance", "worker", "topics",
                             "heartbeat_interval"]), "First: who serves the stream."),
                event([*MESSAGE_TYPES, "message"], _ref("StoredMessage"),
                      "A message, named by its type (`message` with `named=0`)."),
                event(["history-lost"], _object({
                    "reason": {"enum": ["history_trimmed", "stream_reset",
                                        "malformed_last_event_id", "unknown_position",
                                        "low_priority_shed"]},
                    "last_event_id": NULLABLE_STRING,
                    "resumes_from": NULLABLE_STRING,
                }), "On resume: some messages may be missing."),
                event(["heartbeat"], _object({"time": {"type": "number"}}),
                      "With `heartbeat_events=1`: a visible heartbeat."),
                event(["closing"], _object({
                    "reason": {"enum": closing_reasons},
                    "retry_ms": {"type": "integer", "minimum": 0},
                    "message": {"type": "string"},
                    "refused": {"type": "boolean"},
                    "details": {},
                }, required=["reason", "retry_ms"]),
                      "Last: why the stream ends; reconnect after `retry_ms`."),
            ],
        },
    }


def _operation_schemas() -> dict[str, Any]:
    connection = _object({
        "connection_id": {"type": "string"},
        "instance": NULLABLE_STRING,
        "worker": {"type": ["integer", "null"]},
        "kind": {"enum": ["stream", "user", "service", None]},
        "user": NULLABLE_STRING,
        "topics": {"type": "array", "items": {"type": "string"}},
        "remote_addr": NULLABLE_STRING,
        "user_agent": NULLABLE_STRING,
        "connected_at": {"type": ["number", "null"]},
        "frames_sent": {"type": "integer", "minimum": 0},
        "last_event_id": NULLABLE_STRING,
    })
    check = {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}
    return {
        "Connection": connection,
        "ConnectionPage": _object({
            "connections": {"type": "array", "items": _ref("Connection")},
            "count": {"type": "integer", "minimum": 0},
            "next_cursor": {**NULLABLE_STRING, "description": "pass back as `cursor` for "
                                                              "the next page"},
        }),
        "ConnectionStats": _object({
            "connections": _object({"total": {"type": "integer", "minimum": 0},
                                    "by_instance": COUNTS, "by_worker": COUNTS,
                                    "by_kind": COUNTS}),
            "messages": _object({name: {"type": "integer", "minimum": 0} for name in (
                "published", "delivered", "failed", "slow_consumer_disconnects", "replayed",
                "history_lost")}),
            "stream": _object({"length": {"type": "integer", "minimum": 0},
                               "reader_lag_seconds": _object({
                                   "max": {"type": "number"},
                                   "by_worker": {"type": "object",
                                                 "additionalProperties": {"type": "number"}},
                               })}),
            "latency": _object({"window_seconds": {"type": "number"},
                                "samples": {"type": "integer", "minimum": 0},
                                "p50_ms": {"type": ["number", "null"]},
                                "p99_ms": {"type": ["number", "null"]}}),
            "workers": {"type": "integer", "minimum": 0},
            "as_of": {"type": "number", "description": "Unix seconds"},
        }),
        "ConnectionClosed": _object({
            "connection_id": {"type": "string"},
            "found": {"const": True},
            "closed": {"type": "boolean", "description": "false: asked, but its worker "
                                                         "did not confirm within 3 s"},
            "instance": NULLABLE_STRING,
            "worker": {"type": ["integer", "null"]},
        }),
        "Instance": _object({
            "service": {"type": "string"}, "instance": {"type": "string"},
            "address": {"type": "string"}, "port": {"type": "integer"},
            "health_url": {"type": "string"}, "version": {"type": "string"},
            "workers": {"type": "integer"}, "started_at": {"type": "number"},
            "ttl_seconds": {"type": "number"},
        }, required=["service", "instance", "address", "port", "health_url"]),
        "Health": _object({
            "status": {"enum": ["ok", "unavailable"]},
            "version": {"type": "string"},
            "pid": {"type": "integer"},
            "connections": _object({"worker": {"type": "integer", "minimum": 0},
                                    "instance": {"type": "integer", "minimum": 0}}),
            "checks": _object({"redis": check, "reader": check, "delivery": check},
                              required=["redis", "reader"]),
        }),
    }


def name_parameter(name: str, where: str, description: str, max_length: int,
                   required: bool = False) -> dict[str, Any]:
    """A parameter that holds one name (a channel, user, session, ...)."""
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": name_schema(max_length)}
