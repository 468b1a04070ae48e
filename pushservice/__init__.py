"""pushservice: real-time message push over Server-Sent Events, backed by Redis Streams."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from .settings import Settings

if TYPE_CHECKING:  # Flask is imported by create_app, in the worker: gunicorn's master,
    from flask import Flask  # which loads settings through gunicorn.conf.py, stays small.

__version__ = "0.1.0"


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app. ``settings`` default to ``Settings.from_env()``.

    Nothing here opens a connection or starts a greenlet; the reader starts in the worker.
    """
    from flask_cors import CORS

    from .errors import register_error_handlers
    from .web import register_blueprints
    from .web.body import BodyGuard
    from .web.extension import PushService

    settings = settings or Settings.from_env()
    _configure_logging(settings)
    app = _app_class()(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.ensure_ascii = False
    PushService(settings).init_app(app)
    register_error_handlers(app)
    register_blueprints(app)
    CORS(app, **cors_options(settings))
    _cors_only_across_origins(app)
    app.wsgi_app = BodyGuard(app.wsgi_app)
    return app


def _app_class() -> type[Flask]:
    from flask import Flask

    class PushApp(Flask):
        """Flask, minus a check per hook per request: Flask asks of every view and hook,
        on every request, whether it is a coroutine function. Ours are plain functions,
        registered once: ask once."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._synced: dict = {}

        def ensure_sync(self, func):
            synced = self._synced.get(func)
            if synced is None:
                synced = self._synced[func] = super().ensure_sync(func)
            return synced

    return PushApp


def _cors_only_across_origins(app: Flask) -> None:
    """flask-cors adds nothing to the response of a request without an Origin header
    (a service publishing, a load balancer's health check) but takes a while to find that
    out: let such responses pass it by. Error responses go through it as before."""
    from flask import request

    hooks = app.after_request_funcs[None]
    cors = hooks[-1]
    if getattr(cors, "__name__", "") != "cors_after_request":
        return  # not the hook this was written for: leave flask-cors as it is

    def cors_across_origins(response):
        return cors(response) if "HTTP_ORIGIN" in request.environ else response

    hooks[-1] = cors_across_origins


def cors_options(settings: Settings) -> dict:
    """flask-cors options for CORS_ORIGINS: exactly the listed origins may call every
    endpoint with credentials (cookies, Authorization), error responses included; any
    other origin gets no grant. ``*`` allows every origin, but never with credentials."""
    wildcard = "*" in settings.cors_origins
    origins = "*" if wildcard else [
        # Exact matches: flask-cors would read "[" or "?" in an origin as a regex.
        re.compile(re.escape(origin) + r"\Z", re.IGNORECASE)
        for origin in settings.cors_origins
    ]
    return {
        "origins": origins,
        "supports_credentials": not wildcard,
        "allow_headers": ["Authorization", "Content-Type", "Last-Event-ID", "Cache-Control"],
        "expose_headers": ["Retry-After", "WWW-Authenticate"],
        "methods": ["GET", "POST", "DELETE", "OPTIONS"],
        "max_age": 600,
    }


def _configure_logging(settings: Settings) -> None:
    from .logs import add_redacting_filter

    logger = logging.getLogger("pushservice")
    logger.setLevel(settings.log_level.upper())
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)
    # Whatever writes our records also redacts tokens from them.
    for handler in logger.handlers or logging.getLogger().handlers:
        add_redacting_filter(handler)
