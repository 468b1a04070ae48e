"""The delivery confirmation endpoints (web/acks.py) in the OpenAPI document
(web/openapi.py): acknowledging as the receiving user, and the publisher's status."""

from __future__ import annotations

from typing import Any

from ..confirmation import STATES
from ..engine.topics import name_schema
from ..settings import Settings
from .openapi_schemas import error_responses, name_parameter

NULLABLE_STRING = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ids_body(settings: Settings, user_id: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {"ids": {
        "type": "array", "minItems": 1, "maxItems": settings.max_ack_batch_size,
        "items": name_schema(settings.max_name_length)}}
    if user_id:
        # null is read as absent, as the service reads it.
        properties["user_id"] = {**name_schema(settings.max_name_length),
                                 "type": ["string", "null"], "description":
                                 "without authentication: the user who acknowledges"}
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["ids"], "properties": properties,
        "additionalProperties": False}}}}


def confirmation_schemas() -> dict[str, Any]:
    """The component schemas of acknowledgement results and delivery status."""
    result = {"type": "object", "required": ["id", "status", "acknowledged_at"],
              "properties": {
                  "id": {"type": "string"},
                  "status": {"enum": ["acknowledged", "already_acknowledged", "not_found",
                                      "expired"]},
                  "acknowledged_at": _TIME}}
    user = {"type": "object", "properties": {
        "user": {"type": "string"}, "delivered_at": _TIME, "acknowledged_at": _TIME,
        "redeliveries": {"type": "integer", "minimum": 0},
        "next_redelivery_at": _TIME, "dropped_from_inbox_at": _TIME}}
    status = {"type": "object", "required": ["id", "service", "state", "written"],
              "properties": {
                  "id": {"type": "string"}, "service": {"type": "string"},
                  "event_id": {"type": "string"}, "type": {"type": "string"},
                  "priority": {"enum": ["low", "normal", "high", "urgent"]},
                  "topics": {"type": "array", "items": {"type": "string"}},
                  "state": {"enum": list(STATES)},
                  "created_at": _TIME, "expires_at": _TIME, "expired_at": _TIME,
                  "written": {"type": "integer", "minimum": 0,
                              "description": "connections it was written to, across every "
                                             "worker and instance (recorded within 0.2 s)"},
                  "redeliveries": {"type": "integer", "minimum": 0},
                  "ack_timeout_seconds": {"type": "number"},
                  "max_redeliveries": {"type": "integer"},
                  "acknowledged_by": {"type": "array", "items": {
                      "type": "object", "properties": {"user": {"type": "string"},
                                                       "at": _TIME}}},
                  "users": {"type": "array", "items": user},
                  "webhook": {"type": ["object", "null"], "properties": {
                      "state": {"enum": ["pending", "delivered", "failed"]},
                      "attempts": {"type": "integer"}, "at": _TIME}}}}
    return {
        "AckResult": result,
        "Acknowledged": {"type": "object", "required": ["id", "status"], "properties": {
            **result["properties"], "user": NULLABLE_STRING}},
        "BatchAcknowledged": {"type": "object", "required": ["acknowledged", "results"],
                              "properties": {
                                  "acknowledged": {"type": "integer", "minimum": 0},
                                  "results": {"type": "array",
                                              "items": {"$ref": "#/components/schemas/"
                                                                "AckResult"}},
                                  "user": NULLABLE_STRING}},
        "DeliveryStatus": status,
        "DeliveryStatuses": {"type": "object", "required": ["messages", "not_found"],
                             "properties": {
                                 "messages": {"type": "array", "items": {
                                     "$ref": "#/components/schemas/DeliveryStatus"}},
                                 "not_found": {"type": "array",
                                               "items": {"type": "string"}}}},
    }


def confirmation_paths(settings: Settings, stream_security: dict[str, Any],
                       bearer: dict[str, Any], auth_codes: list[str]) -> dict[str, Any]:
    """The paths. ``stream_security`` is what streams accept (a browser acknowledges
    with the same credentials), ``bearer`` what a publisher sends, ``auth_codes`` the
    codes of refusing a token (none without authentication)."""
    body_codes = ["invalid_json", "invalid_body", "request_timeout", "payload_too_large",
                  "unsupported_media_type"]
    ack_codes = [*auth_codes, *body_codes, "invalid_message_id", "invalid_user_id",
                 "ack_forbidden", "redis_unavailable"]
    status_codes = [*auth_codes, "invalid_message_id", "status_forbidden",
                    "redis_unavailable"]
    message_id = name_parameter("message_id", "path", "the message's id (as published)",
                                settings.max_name_length)

    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    def answer(schema: str, text: str) -> dict[str, Any]:
        return {"description": text, "content": {"application/json": {"schema": ref(schema)}}}

    json_only = ("The body must be JSON (`Content-Type: application/json`), which a "
                 "cross-site form cannot send: another site cannot acknowledge with a "
                 "user's cookie.")
    return {
        "/api/v1/messages/{message_id}/ack": {"post": {
            "tags": ["confirmation"], "operationId": "acknowledgeMessage",
            "summary": "Acknowledge a message, as the user it was for",
            "description": "Idempotent: a repeat answers `already_acknowledged` and when. "
                           + json_only + " An empty body is `{}`.",
            **stream_security, "parameters": [message_id],
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": {"type": "object", "properties": {
                    "user_id": name_schema(settings.max_name_length)}}}}},
            "responses": {"200": answer("Acknowledged", "Acknowledged (now or before)."),
                          **error_responses([*ack_codes, "message_not_found"])}}},
        "/api/v1/messages/ack": {"post": {
            "tags": ["confirmation"], "operationId": "acknowledgeMessages",
            "summary": "Acknowledge several messages",
            "description": f"At most {settings.max_ack_batch_size} ids "
                           "(MAX_ACK_BATCH_SIZE). All or none: one id of a message for "
                           "another user refuses the request. Unknown and expired ids are "
                           "listed in the results, not refused. " + json_only,
            **stream_security, "requestBody": _ids_body(settings, user_id=True),
            "responses": {"200": answer("BatchAcknowledged", "Acknowledged."),
                          **error_responses([*ack_codes, "validation_failed",
                                             "too_many_ids"])}}},
        "/api/v1/messages/{message_id}": {"get": {
            "tags": ["confirmation"], "operationId": "deliveryStatus",
            "summary": "A message's delivery status (its publisher or an admin)",
            "description": "Only messages published with `metadata.require_ack: true` "
                           "have one, until ACK_STATUS_RETENTION_SECONDS after they expire.",
            **bearer, "parameters": [message_id],
            "responses": {"200": answer("DeliveryStatus", "The status."),
                          **error_responses([*status_codes, "message_not_found",
                                             "method_not_allowed"])}}},
        "/api/v1/messages/status": {"post": {
            "tags": ["confirmation"], "operationId": "deliveryStatuses",
            "summary": "The delivery status of several messages",
            "description": f"At most {settings.max_ack_batch_size} ids. Ids without a "
                           "record are listed in `not_found`; one id of another service's "
                           "message refuses the request.",
            **bearer, "requestBody": _ids_body(settings, user_id=False),
            "responses": {"200": answer("DeliveryStatuses", "The statuses."),
                          **error_responses([*status_codes, *body_codes,
                                             "validation_failed", "too_many_ids"])}}},
    }
