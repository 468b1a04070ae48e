"""Connection API: every connection of every worker and instance; stats; closing one."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..auth import admin_only
from ..engine.topics import is_valid_name
from ..errors import BadRequestError
from .extension import push_service
from .routing import segment_except

bp = Blueprint("connections", __name__, url_prefix="/api/v1/connections")
# Every view here needs a token with the admin role (401/403 otherwise).
bp.before_request(admin_only)

MAX_PAGE = 1000
# DELETE .../stats is a 405, not the closing of a connection called "stats".
segment_except(bp, "connection_id", "stats")

_FILTERS = ("user", "topic", "instance", "cursor")


@bp.get("")
def list_connections():
    """Connections, oldest first, filterable by ``user``, ``topic`` and ``instance``,
    ``limit`` per page (default 100, at most 1000), continued with ``cursor``."""
    args = request.args
    # A misspelt filter (``user_id``) would silently list everybody.
    unknown = sorted(set(args) - {*_FILTERS, "limit"})
    if unknown:
        named = ", ".join(name[:40] for name in unknown[:5])
        raise BadRequestError(
            f"Unknown parameter {named}: filter with user, topic or instance; page with "
            "limit and cursor.", details={"parameters": [n[:40] for n in unknown[:5]]},
            code="invalid_parameter")
    filters = {}
    for name in _FILTERS:
        value = args.get(name)
        if value is not None:
            if not is_valid_name(value):
                raise BadRequestError(f"Invalid {name}.", details={"parameter": name},
                                      code=f"invalid_{name}")
            filters[name] = value
    try:
        limit = int(args.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequestError(f"limit must be an integer from 1 to {MAX_PAGE}.",
                              details={"parameter": "limit"}, code="invalid_limit")
    return jsonify(push_service().registry.list(limit=limit, **filters))


@bp.get("/stats")
def connection_stats():
    """Connections per instance, worker and kind; message counters; stream and latency."""
    return jsonify(push_service().registry.deployment_stats())


@bp.delete("/<connection_id:connection_id>")
def close_connection(connection_id: str):
    """Close a connection wherever it lives; 404 when there is no such connection."""
    if not is_valid_name(connection_id):
        raise BadRequestError("Invalid connection id.", code="invalid_connection_id")
    result = push_service().registry.close_connection(connection_id)
    response = jsonify(result)
    response.status_code = 200 if result["closed"] else 202
    return response
