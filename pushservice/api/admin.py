"""Administration: the registered instances."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..service import current_service

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/instances")
def instances():
    """Every instance that keeps its registration alive, with its address and health URL."""
    return jsonify({"instances": current_service().registry.instances()})
