"""The Flask side: the extension that owns a worker's parts, opening and closing streams,
and the blueprints, one per surface (publish, delivery confirmation, subscribe,
connections, admin, health, cookie, static assets, the OpenAPI document and its
documentation page)."""

from __future__ import annotations

from flask import Flask


def register_blueprints(app: Flask) -> None:
    from . import (
        acks,
        admin,
        assets,
        connections,
        cookie,
        docs,
        health,
        openapi,
        publish,
        subscribe,
    )

    for module in (publish, acks, subscribe, connections, admin, health, cookie, assets,
                   openapi, docs):
        app.register_blueprint(module.bp)
