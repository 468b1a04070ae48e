"""The Flask extension: builds and owns one app's parts, and starts them in the worker.

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

from flask import Flask, current_app

from ..auth import Authenticator
from ..engine.subscription import CloseReason
from ..engine.worker import WorkerEngine
from ..errors import ConflictError, StoreUnavailableError
from ..group_commit import CallTimedOutError, GroupCommit
from ..message import Message, MessageFactory
from ..ops.ack_schedule import AckSchedule
from ..ops.capacity import ConnectionBudget
from ..ops.instances import InstanceRegistration
from ..ops.metrics import PushMetrics
from ..ops.registry import ConnectionRegistry
from ..settings import Settings
from ..store import ConnectionRecords, ControlStore, DeploymentRecords, MessageStore, Published
from ..store.rates import PublishRateLimiter
from .streams import Streams

log = logging.getLogger(__name__)

EXTENSION_KEY = "pushservice"


class PushService:
    """Everything one app needs to publish, stream and be operated.

    ``settings`` default to ``Settings.from_env()`` at ``init_app`` time.
    """

    def __init__(self, settings: Settings | None = None, app: Flask | None = None) -> None:
        self.settings = settings
        self.store: MessageStore | None = None
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
        self.engine = engine = WorkerEngine.build(settings)
        self.store, self.hub, self.reader = engine.store, engine.hub, engine.reader
        redis, keys = self.store.connections, self.store.keys
        deployment = DeploymentRecords(redis, keys)
        self.registry = ConnectionRegistry(engine, ConnectionRecords(redis, keys), deployment,
                                           ControlStore(redis, keys))
        self.streams = Streams(engine, self.registry,
                               ConnectionBudget(settings.max_connections))
        self.messages = MessageFactory(settings.message_ttl, settings.max_message_bytes,
                                       max_name_length=settings.max_name_length,
                                       max_topics=settings.max_topics_per_message)
        self.registration = InstanceRegistration(settings, deployment)
        self.metrics = PushMetrics(settings)
        self.metrics.init_app(app)
        self.group_commit = GroupCommit(self.store.publish)
        self.rates = PublishRateLimiter(settings, redis, keys)
        # Delivery confirmation: records and inboxes, and the schedules one worker runs.
        self.acks = engine.confirmations.store
        self.ack_schedule = AckSchedule(settings, self.acks, deployment,
                                        self.registry.control, engine.stats)
        self._started_in: int | None = None
        app.extensions[EXTENSION_KEY] = self

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start this worker's greenlets (after fork). Idempotent per process."""
        if self._started_in == os.getpid():
            return
        self._started_in = os.getpid()
        log.info("worker %s starts its reader on %s", os.getpid(),
                 self.settings.redis_url_redacted)
        _tune_garbage_collection()
        self.engine.start()
        self.registry.start()
        self.registration.start()
        self.ack_schedule.start()
        self.metrics.start(self.engine, lambda: self.registry.stream_length)

    def stop(self) -> None:
        """Stop this worker's greenlets, write what the registry still holds and withdraw
        the worker (best effort; what is left behind expires by itself)."""
        self.metrics.stop()
        self.registration.stop()
        self.ack_schedule.stop()
        self.engine.stop()
        self.registry.stop()
        self._started_in = None

    def use_shared_budget(self, budget: ConnectionBudget) -> None:
        """Count this worker's streams in the instance-wide table (gunicorn hook)."""
        self.streams.budget = budget

    def shutdown(self, spread_seconds: float):
        """Tell every open stream to reconnect elsewhere, spread over ``spread_seconds``,
        and withdraw this worker from the registry."""
        count = self.hub.connection_count()
        if count:
            log.info("closing %d streams over %.1fs for shutdown", count, spread_seconds)
        closing = self.hub.close_all(CloseReason.SHUTDOWN, spread_seconds)
        self.registration.stop()
        self.ack_schedule.stop()  # another worker runs the schedules from now on
        return closing

    # -- publishing ---------------------------------------------------------------------

    def publish(self, messages: Sequence[Message],
                timeout: float | None = None) -> list[Published]:
        """Store ``messages`` (all or none), sharing the round trip to Redis with
        concurrent publishes of this worker; counts what failed for the metrics.

        Answers within ``timeout`` seconds (REQUEST_TIMEOUT_SECONDS by default):
        StoreUnavailableError (503) when Redis did not answer by then, and then nothing
        was written (the publish script refuses to write after the deadline)."""
        if timeout is None:
            timeout = self.settings.request_timeout_seconds
        if any(message.ack is not None and message.client_id for message in messages):
            self._check_ack_ids(messages)
        try:
            return self.group_commit.submit(messages, timeout=max(timeout, 0.0))
        except CallTimedOutError:
            self.engine.stats.publish_failed += len(messages)
            raise StoreUnavailableError(
                "Redis did not answer within REQUEST_TIMEOUT_SECONDS; nothing was written.",
                retry_after=2, details={"written": False}) from None
        except StoreUnavailableError:
            self.engine.stats.publish_failed += len(messages)
            raise

    def _check_ack_ids(self, messages: Sequence[Message]) -> None:
        """Refuse (409) a confirmation-requiring message whose own id another service's
        such message holds: acknowledgements name messages by id alone. Checked before
        the write, so that a refusal fails only this request, not the others that share
        its round trip (the publish script checks again, atomically)."""
        chosen = [(index, message) for index, message in enumerate(messages)
                  if message.ack is not None and message.client_id]
        owners = self.acks.owners([message.id for _, message in chosen])
        for (index, message), owner in zip(chosen, owners):
            if owner is not None and owner != message.service:
                raise ConflictError(
                    f"The message id {message.id!r} belongs to another service's message "
                    "that waits for acknowledgement: choose another id.",
                    details={"index": index, "id": message.id}, code="message_id_taken")


def _tune_garbage_collection() -> None:
    """A worker lives long and holds thousands of streams: full collections that walk
    every object stalled all of them (the 1 % slowest deliveries took twice as long).
    Freeze what start-up built, so collections skip it, and collect young objects less
    often; reference counting still frees almost everything at once."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 50)


def push_service() -> PushService:
    """The PushService of the current app."""
    return current_app.extensions[EXTENSION_KEY]
