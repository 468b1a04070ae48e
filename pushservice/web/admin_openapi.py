"""The admin dashboard's endpoints (web/admin.py) in the OpenAPI document (web/openapi.py).

The dashboard's copies of the connection API are the same operations as
``/api/v1/connections...``; the page answers its sign-in form (HTML) where the other
endpoints answer a JSON error.
"""

from __future__ import annotations

import copy
from typing import Any

from ..message import MessageFactory
from ..ops.dashboard import TOPIC_FILTER
from .openapi_schemas import error_responses

# Fields of a message that the dashboard sets itself on a test message.
_SET_BY_DASHBOARD = ("service", "source")


def dashboard_paths(paths: dict[str, Any], messages: MessageFactory, bearer: dict[str, Any],
                    admin_codes: list[str]) -> dict[str, Any]:
    """The dashboard's paths. ``paths`` are the document's other paths (the connection
    API's operations are reused), ``bearer`` the security of an admin endpoint and
    ``admin_codes`` the error codes of refusing a caller (none without authentication)."""
    refusals = [*admin_codes, "cross_origin_cookie"] if admin_codes else []
    html = {"text/html": {"schema": {"type": "string"}}}
    page_errors = {
        status: {"description": f"The sign-in form ({text}).", "content": html,
                 **({"headers": {"WWW-Authenticate": {
                     "required": True, "description": "Bearer challenge (RFC 6750)",
                     "schema": {"type": "string"}}}} if status == "401" else {})}
        for status, text in (("401", "no usable token"),
                             ("403", "a token without the admin role"))} if admin_codes else {}
    set_cookie = {"Set-Cookie": {"description": "the HttpOnly cookie of the dashboard, path "
                                                "`/admin/`, SameSite=Strict",
                                 "schema": {"type": "string"}}}

    def reused(path: str, method: str, operation_id: str) -> dict[str, Any]:
        operation = copy.deepcopy(paths[path][method])
        operation.update(tags=["admin"], operationId=operation_id,
                         description="The same as `" + path + "`, for the dashboard (its "
                                     "cookie is accepted too).")
        if refusals:
            operation["responses"].update(error_responses(
                list(dict.fromkeys([*refusals, *_codes(operation["responses"])]))))
        return {method: operation}

    return {
        "/admin/": {"get": {
            "tags": ["admin"], "operationId": "adminDashboard", **bearer,
            "summary": "The admin dashboard (HTML)",
            "description": "The page; without an admin token (header or the dashboard's "
                           "cookie) its sign-in form.",
            "responses": {"200": {"description": "The dashboard.", "content": html},
                          **page_errors}}},
        "/admin/session": {
            "post": {"tags": ["admin"], "operationId": "adminSignIn", **bearer,
                     "summary": "Keep an admin's bearer token in the dashboard's cookie",
                     "responses": {"204": {"description": "The cookie is set (nothing is "
                                                          "set when authentication is off).",
                                           "headers": set_cookie},
                                   **error_responses(refusals)}},
            "delete": {"tags": ["admin"], "operationId": "adminSignOut", "security": [],
                       "summary": "Remove the dashboard's cookie",
                       "responses": {"204": {"description": "The cookie is removed.",
                                             "headers": set_cookie}}},
        },
        "/admin/events": {"get": {
            "tags": ["admin"], "operationId": "adminEvents", **bearer,
            "summary": "The dashboard's event stream",
            "description": "`hello` once, then every second `figures` (connections, "
                           "rates, latency, the stream, instance health) and `messages` "
                           "(the newest messages, at most 50 a second); `closing` when "
                           "the worker stops or the token expires.",
            "parameters": [{"name": "topic", "in": "query",
                            "description": "only messages with a topic matching this "
                                           "topic or glob (empty: every message)",
                            "schema": {"type": "string",
                                       "pattern": f"^({TOPIC_FILTER.pattern})?$"}}],
            # OpenAPI 3.1: a text/event-stream schema describes one event.
            "responses": {"200": {"description": "The event stream.", "content": {
                "text/event-stream": {"schema": {
                    "type": "object", "required": ["event", "data"],
                    "properties": {"event": {"enum": ["hello", "figures", "messages",
                                                      "closing"]},
                                   "data": {"type": "string",
                                            "contentMediaType": "application/json"},
                                   "id": {"type": "string"},
                                   "retry": {"type": "integer", "minimum": 0}}}}}},
                **error_responses([*refusals, "invalid_parameter", "invalid_topic"])}}},
        "/admin/connections": reused("/api/v1/connections", "get", "adminListConnections"),
        "/admin/connections/{connection_id}": reused(
            "/api/v1/connections/{connection_id}", "delete", "adminCloseConnection"),
        "/admin/messages": {"post": {
            "tags": ["admin"], "operationId": "adminSendTestMessage", **bearer,
            "summary": "Publish a test message as this service",
            "description": "A message without `service` and `source`: it is published "
                           "as SERVICE_NAME, source `admin-dashboard`.",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _test_message_schema(messages)}}},
            "responses": {"202": {"description": "Published.", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Published"}}}},
                **error_responses([*refusals, "invalid_json", "validation_failed",
                                   "unsupported_media_type", "message_too_large",
                                   "payload_too_large", "rate_limited",
                                   "redis_unavailable"])}}},
    }


def _test_message_schema(messages: MessageFactory) -> dict[str, Any]:
    schema = copy.deepcopy(messages.json_schema())
    for name in _SET_BY_DASHBOARD:
        schema["properties"].pop(name, None)
    schema["required"] = [name for name in schema["required"] if name not in _SET_BY_DASHBOARD]
    schema["description"] = "A message as for `POST /api/v1/messages/send`, without " \
                            "`service` and `source`."
    return schema


def _codes(responses: dict[str, Any]) -> list[str]:
    """The error codes an operation's documented responses already list."""
    codes = []
    for response in responses.values():
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        codes += _enum_of_code(schema)
    return codes


def _enum_of_code(schema: dict[str, Any]) -> list[str]:
    try:
        return list(schema["properties"]["error"]["properties"]["code"]["enum"])
    except (KeyError, TypeError):
        return []
