"""Static files the service serves itself (the JavaScript client, the dashboard's
assets): no CDN, no build step. Anyone may fetch them; they hold no data."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory

STATIC_FOLDER = Path(__file__).resolve().parent / "static"

bp = Blueprint("assets", __name__, url_prefix="/static")


@bp.get("/<path:filename>")
def static_file(filename: str):
    """A file of ``pushservice/web/static`` (404 JSON for anything else), revalidated by
    browsers on each use so that an upgrade is picked up at once."""
    response = send_from_directory(STATIC_FOLDER, filename, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response
