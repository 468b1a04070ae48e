"""The HTTP surfaces of the service, one blueprint per file."""

from __future__ import annotations

from flask import Flask

from . import admin, connections, cookie, health, publish, stream


def register_blueprints(app: Flask) -> None:
    for module in (publish, stream, connections, admin, health, cookie):
        app.register_blueprint(module.bp)
