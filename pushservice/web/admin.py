"""Administration: the registered instances."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..auth import admin_only
from .extension import push_service

bp = Blueprint("admin", __name__, url_prefix="/admin")
# Every view here needs a token with the admin role (401/403 otherwise).
bp.before_request(admin_only)


@bp.get("/instances")
def instances():
    """Every instance that keeps its registration alive, with its address and health URL."""
    return jsonify({"instances": push_service().registry.instances()})
