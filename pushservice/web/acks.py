"""Delivery confirmation API: users acknowledge messages, publishers ask how they went.

- ``POST /api/v1/messages/{id}/ack`` and ``POST /api/v1/messages/ack`` with
  ``{"ids": [...]}``: the receiving user acknowledges (idempotent). The token is looked
  for as for streams (``Authorization: Bearer``, ``?token=``, the auth cookie), so that a
  browser page can acknowledge what its stream showed. The body must be JSON
  (``Content-Type: application/json``, which a cross-site form cannot send and which
  makes a browser ask CORS first), so that another site cannot acknowledge on a user's
  behalf with the cookie.
- ``GET /api/v1/messages/{id}`` and ``POST /api/v1/messages/status`` with
  ``{"ids": [...]}``: a message's delivery status, for the service that published it or
  an admin.

Only messages published with ``metadata.require_ack: true`` have a delivery record; every
other id is answered as unknown (404).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from flask import Blueprint, Response, request

from ..auth import Principal, authenticate
from ..confirmation import delivery_status, iso_ms
from ..engine.topics import is_valid_name
from ..errors import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from ..message import printable
from .body import read_body
from .extension import PushService, push_service
from .routing import segment_except

bp = Blueprint("acks", __name__, url_prefix="/api/v1/messages")

# The POST endpoints beside /api/v1/messages/{id}: GET them and you get 405, not a status
# (a message with such an id has its status through POST /api/v1/messages/status).
segment_except(bp, "message_id", "send", "broadcast", "batch", "ack", "status")

_STATUS_WORDS = {"acknowledged": "acknowledged", "already": "already_acknowledged",
                 "unknown": "not_found", "expired": "expired"}


@bp.post("/<message_id>/ack")
def acknowledge_one(message_id: str):
    """The receiving user acknowledges one message. 404 when it is unknown or expired,
    403 when it was not for this user."""
    service = push_service()
    principal = authenticate(stream=True)
    body = _json_object(service, allow_empty=True)
    _check_ids(service, [message_id])
    user = _acknowledging_user(principal, body)
    ((status, at),) = _acknowledge(service, [message_id], user)
    if status in ("unknown", "expired"):
        raise _not_found(message_id, status)
    return _json({"id": message_id, "status": _STATUS_WORDS[status],
                  "acknowledged_at": iso_ms(at), "user": user})


@bp.post("/ack")
def acknowledge_many():
    """The receiving user acknowledges several messages: ``{"ids": [...]}``, at most
    MAX_ACK_BATCH_SIZE. All of them or none: one id of a message for someone else refuses
    the request (403). Unknown and expired ids are listed, not refused."""
    service = push_service()
    principal = authenticate(stream=True)
    body = _json_object(service)
    ids = _ids_of(service, body, allowed={"ids", "user_id"})
    user = _acknowledging_user(principal, body)
    results = _acknowledge(service, ids, user)
    return _json({
        "acknowledged": sum(1 for status, _ in results if status == "acknowledged"),
        "results": [{"id": message_id, "status": _STATUS_WORDS[status],
                     "acknowledged_at": iso_ms(at)}
                    for message_id, (status, at) in zip(ids, results)],
        "user": user,
    })


@bp.get("/<message_id:message_id>")
def status_one(message_id: str):
    """The delivery status of one message, for its publisher or an admin."""
    service = push_service()
    principal = authenticate()
    _check_ids(service, [message_id])
    (record,) = service.acks.records([message_id])
    if record is None:
        raise _not_found(message_id, "unknown")
    if not _may_see(principal, record):
        raise _status_forbidden([message_id])
    return _json(delivery_status(record, _now_ms()))


@bp.post("/status")
def status_many():
    """The delivery status of several messages: ``{"ids": [...]}``, at most
    MAX_ACK_BATCH_SIZE. Ids without a record are listed in ``not_found``; one id of
    another service's message refuses the request (403)."""
    service = push_service()
    principal = authenticate()
    ids = _ids_of(service, _json_object(service), allowed={"ids"})
    records = service.acks.records(ids)
    forbidden = [message_id for message_id, record in zip(ids, records)
                 if record is not None and not _may_see(principal, record)]
    if forbidden:
        raise _status_forbidden(forbidden)
    now_ms = _now_ms()
    return _json({
        "messages": [delivery_status(record, now_ms) for record in records if record],
        "not_found": [message_id for message_id, record in zip(ids, records) if not record],
    })


# -- acknowledging ---------------------------------------------------------------------------


def _acknowledging_user(principal: Principal, body: dict[str, Any]) -> str | None:
    """Who acknowledges: the token's subject. Without authentication, the ``user_id`` of
    the body (or of the query), else every user each message is for."""
    named = body.get("user_id", request.args.get("user_id"))
    if named is not None and not is_valid_name(named, push_service().settings.max_name_length):
        raise BadRequestError("Invalid user_id.", details={"parameter": "user_id"},
                              code="invalid_user_id")
    if principal.subject is None:
        return named
    if named is not None and named != principal.subject:
        raise ForbiddenError("A token acknowledges for its own user (its sub) only.",
                             details={"user_id": named, "subject": principal.subject},
                             code="ack_forbidden")
    return principal.subject


def _acknowledge(service: PushService, ids: list[str], user: str | None
                 ) -> list[tuple[str, int | None]]:
    result = service.acks.acknowledge(ids, user, _now_ms())
    if result and isinstance(result[0], int):
        refused = [ids[index] for index in result]
        raise ForbiddenError(
            f"{'This message was' if len(ids) == 1 else 'Some of these messages were'} not "
            f"for {user!r}: nothing was acknowledged.",
            details={"ids": refused[:50], "user": user}, code="ack_forbidden")
    service.engine.stats.acknowledged += sum(
        1 for status, _ in result if status == "acknowledged")
    return result


# -- reading the request -----------------------------------------------------------------------


def _json_object(service: PushService, allow_empty: bool = False) -> dict[str, Any]:
    """The body: a JSON object sent as ``application/json`` (415 otherwise: a cross-site
    form cannot send that type, so no other site can acknowledge with a user's cookie);
    empty means ``{}`` where ``allow_empty``."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaTypeError(
            "Send Content-Type: application/json (with a JSON body, or none to acknowledge "
            "one message): browsers send that only from pages CORS_ORIGINS allows.",
            details={"content_type": printable(request.content_type)})
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaTypeError("JSON is UTF-8: send no other charset.",
                                        details={"charset": printable(charset)})
    settings = service.settings
    # Room for a full batch of the longest ids, no more.
    limit = 1024 + settings.max_ack_batch_size * (settings.max_name_length + 8)
    raw = read_body(min(limit, settings.max_request_bytes), settings.request_timeout_seconds)
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequestError('The body is empty: send {"ids": [...]}.', code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"The body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise BadRequestError("The body must be a JSON object.", code="invalid_json")
    return body


def _ids_of(service: PushService, body: dict[str, Any], allowed: set[str]) -> list[str]:
    """``body["ids"]``: 1 to MAX_ACK_BATCH_SIZE message ids, repeats dropped."""
    unknown = sorted(str(key) for key in body if key not in allowed)[:10]
    if unknown:
        raise BadRequestError(f"Unknown field {unknown[0]!r}: send {{\"ids\": [...]}}.",
                              details={"fields": unknown}, code="validation_failed")
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids:
        raise BadRequestError('Send {"ids": [...]} with at least one message id.',
                              details={"field": "ids"}, code="validation_failed")
    limit = service.settings.max_ack_batch_size
    if len(ids) > limit:
        raise PayloadTooLargeError(
            f"{len(ids)} ids in one request; the limit is {limit} (MAX_ACK_BATCH_SIZE).",
            details={"count": len(ids), "limit": limit}, code="too_many_ids")
    _check_ids(service, ids)
    return list(dict.fromkeys(ids))


def _check_ids(service: PushService, ids: list[Any]) -> None:
    longest = service.settings.max_name_length
    bad = [index for index, message_id in enumerate(ids)
           if not is_valid_name(message_id, longest)]
    if bad:
        raise BadRequestError(
            f"Invalid message id: use 1-{longest} letters, digits, '_', '-', '.', ':' or '@' "
            "(as the id a message is published with).",
            details={"indexes": bad[:50]} if len(ids) > 1 else None,
            code="invalid_message_id")


# -- status ------------------------------------------------------------------------------------


def _may_see(principal: Principal, record: dict[str, str]) -> bool:
    """The service that published a message sees its status, and so do admins."""
    return principal.is_admin or (principal.service is not None
                                  and principal.service == record.get("service"))


def _status_forbidden(ids: list[str]) -> ForbiddenError:
    return ForbiddenError(
        "Only the service that published a message, or an admin, sees its status.",
        details={"ids": ids[:50]}, code="status_forbidden")


def _not_found(message_id: str, status: str) -> NotFoundError:
    why = ("its TTL ran out" if status == "expired" else
           "only messages published with metadata.require_ack: true have one, until "
           "ACK_STATUS_RETENTION_SECONDS after they expire")
    return NotFoundError(f"No message {message_id!r} waits for acknowledgement: {why}.",
                         details={"id": message_id, "reason": status},
                         code="message_not_found")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload), status=200, mimetype="application/json")
