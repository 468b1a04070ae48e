"""The Flask extension that owns one app's store, hub, registry, metrics, authentication
and limits.

Created without an app and bound with ``init_app(app)``; its state lives in
``app.extensions["pushservice"]``. Nothing here opens a socket or starts a greenlet at
import or bind time: ``start()`` runs in the worker (gunicorn's post_worker_init hook, or
the first request under the development server).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flask import Flask, current_app

from .auth import Authenticator
from .capacity import ConnectionBudget
from .errors import ServiceUnavailableError, StoreUnavailableError
from .hub import Hub
from .instances import InstanceRegistration
from .message import Message, MessageFactory
from .metrics import PushMetrics
from .publishing import GroupCommit
from .registry import ConnectionRegistry
from .settings import Settings
from .store import ControlStore, Published, RegistryStore, Store
from .store.rates import PublishRateLimiter
from .subscription import CloseReason, Subscription

if TYPE_CHECKING:
    from .streaming import StreamSession

log = logging.getLogger(__name__)

EXTENSION_KEY = "pushservice"


class PushService:
    """Everything one app needs to publish, stream and be operated.

    ``settings`` default to ``Settings.from_env()`` at ``init_app`` time.
    """

    def __init__(self, settings: Settings | None = None, app: Flask | None = None) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.hub: Hub | None = None
        self.messages: MessageFactory | None = None
        self.budget: ConnectionBudget | None = None
        self.registry: ConnectionRegistry | None = None
        self.registration: InstanceRegistration | None = None
        self.metrics: PushMetrics | None = None
        self.group_commit: GroupCommit | None = None
        self.auth: Authenticator | None = None
        self.rates: PublishRateLimiter | None = None
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
        # First: a service that cannot authenticate must not come up at all.
        self.auth = Authenticator(settings)
        if not settings.enable_auth:
            log.warning("authentication is disabled (ENABLE_AUTH=false): every endpoint is "
                        "open to anyone who can reach it")
        self.store = Store(settings)
        keys = self.store.keys
        registry_store = RegistryStore(self.store.connections, keys)
        self.hub = Hub(settings, self.store)
        self.messages = MessageFactory(settings.message_ttl, settings.max_message_bytes,
                                       max_name_length=settings.max_name_length,
                                       max_topics=settings.max_topics_per_message)
        self.budget = ConnectionBudget(settings.max_connections)
        self.registry = ConnectionRegistry(settings, self.hub, registry_store,
                                           ControlStore(self.store.connections, keys))
        self.registration = InstanceRegistration(settings, registry_store)
        self.metrics = PushMetrics(settings)
        self.group_commit = GroupCommit(self.store.publish)
        self.metrics.init_app(app)
        self.rates = PublishRateLimiter(settings, self.store.connections, keys)
        app.extensions[EXTENSION_KEY] = self

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start this worker's greenlets (after fork). Idempotent."""
        if self.hub.started:
            return
        log.info("worker %s starts its reader on %s", os.getpid(),
                 self.settings.redis_url_redacted)
        _tune_garbage_collection()
        self.hub.start()
        self.registry.start()
        self.registration.start()
        self.metrics.start(self.hub, lambda: self.registry.stream_length)

    def use_shared_budget(self, budget: ConnectionBudget) -> None:
        """Count this worker's streams in the instance-wide table (gunicorn hook)."""
        self.budget = budget

    def shutdown(self, spread_seconds: float):
        """Tell every open stream to reconnect elsewhere, spread over ``spread_seconds``,
        and withdraw this worker from the registry."""
        count = self.hub.connection_count()
        if count:
            log.info("closing %d streams over %.1fs for shutdown", count, spread_seconds)
        closing = self.hub.close_all(CloseReason.SHUTDOWN, spread_seconds)
        self.registration.stop()
        return closing

    # -- publishing ---------------------------------------------------------------------

    def publish(self, messages: Sequence[Message]) -> list[Published]:
        """Store ``messages`` (all or none), sharing the round trip to Redis with
        concurrent publishes of this worker; counts what failed for the metrics."""
        try:
            return self.group_commit.publish(messages)
        except StoreUnavailableError:
            self.hub.stats.publish_failed += len(messages)
            raise

    # -- connections --------------------------------------------------------------------

    def admit(self, subscription: Subscription, remote_addr: str | None = None,
              user_agent: str | None = None) -> None:
        """Count a new stream against MAX_CONNECTIONS and MAX_CONNECTIONS_PER_USER.

        Raises ServiceUnavailableError (503) or TooManyRequestsError (429); on success
        the caller must call ``release(subscription)`` when the stream ends."""
        if not self.budget.try_acquire():
            raise ServiceUnavailableError(
                f"This instance holds its maximum of {self.settings.max_connections} "
                "connections (MAX_CONNECTIONS); retry later or on another instance.",
                retry_after=5, code="too_many_connections")
        try:
            self.registry.admit(subscription, remote_addr, user_agent)
        except BaseException:
            self.budget.release()
            raise

    def release(self, subscription: Subscription) -> None:
        """The stream of ``subscription`` ended."""
        self.budget.release()
        self.registry.remove(subscription)

    def release_session(self, session: StreamSession) -> None:
        """A stream session's ``on_close``: a bound method, lighter than a closure on
        each of thousands of connections."""
        self.release(session.subscription)


def _tune_garbage_collection() -> None:
    """A worker lives long and holds thousands of streams: full collections that walk
    every object stalled all of them (the 1 % slowest deliveries took twice as long).
    Freeze what start-up built, so collections skip it, and collect young objects less
    often; reference counting still frees almost everything at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 50)


def current_service() -> PushService:
    """The PushService of the current app."""
    return current_app.extensions[EXTENSION_KEY]
