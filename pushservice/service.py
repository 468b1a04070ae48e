"""The Flask extension that owns one app's store, hub, message factory and limits.

Created without an app and bound with ``init_app(app)``; its state lives in
``app.extensions["pushservice"]``. Nothing here opens a socket or starts a greenlet at
import or bind time: ``start()`` runs in the worker (gunicorn's post_worker_init hook, or
the first request under the development server).
"""

from __future__ import annotations

import logging
import os
from flask import Flask, current_app

from .capacity import ConnectionBudget
from .hub import Hub
from .message import MessageFactory
from .settings import Settings
from .store import Store
from .subscription import CloseReason

log = logging.getLogger(__name__)

EXTENSION_KEY = "pushservice"


class PushService:
    """Everything one app needs to publish and stream.

    ``settings`` default to ``Settings.from_env()`` at ``init_app`` time.
    """

    def __init__(self, settings: Settings | None = None, app: Flask | None = None) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.hub: Hub | None = None
        self.messages: MessageFactory | None = None
        self.budget: ConnectionBudget | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "pushservice is already registered on this app; call init_app() once per "
                "app, or create a new app with create_app()."
            )
        if self.store is not None:
            raise RuntimeError(
                "this PushService is already bound to another app; create one PushService "
                "per app."
            )
        settings = self.settings or Settings.from_env()
        self.settings = settings
        self.store = Store(settings)
        self.hub = Hub(settings, self.store)
        self.messages = MessageFactory(settings.message_ttl, settings.max_message_bytes)
        self.budget = ConnectionBudget(settings.max_connections)
        app.extensions[EXTENSION_KEY] = self

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader in this process (after fork). Idempotent."""
        assert self.hub is not None
        if not self.hub.started:
            log.info("worker %s starts its reader on %s", os.getpid(),
                     self.settings.redis_url_redacted)
        self.hub.start()

    def use_shared_budget(self, budget: ConnectionBudget) -> None:
        """Count this worker's streams in the instance-wide table (gunicorn hook)."""
        self.budget = budget

    def shutdown(self, spread_seconds: float):
        """Tell every open stream to reconnect elsewhere, spread over ``spread_seconds``."""
        assert self.hub is not None
        count = self.hub.connection_count()
        if count:
            log.info("closing %d streams over %.1fs for shutdown", count, spread_seconds)
        return self.hub.close_all(CloseReason.SHUTDOWN, spread_seconds)


def current_service() -> PushService:
    """The PushService of the current app."""
    return current_app.extensions[EXTENSION_KEY]

