"""The schedules of delivery confirmation, run by one worker of the whole deployment at a
time (the holder of a lease in Redis; another takes over within LEASE_SECONDS when it
dies):

- redeliveries whose time came (a user did not acknowledge within the message's timeout)
  go to every worker over the control channel, and each hands them to its own streams
  of that user (engine/confirmations.py); a user without a stream keeps the message in
  the inbox for its next one;
- messages whose TTL ran out leave every inbox; those left unacknowledged count in
  ``expired_unacknowledged`` and, with ACK_WEBHOOK_URL, get an expiry notice queued;
- queued notices are sent (ops/webhook.py), each claimed in Redis while it is sent, so
  that no two workers ever send the same notice at once, and retried with full-jitter
  backoff until the receiver takes it or ACK_WEBHOOK_MAX_ATTEMPTS are spent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from gevent.pool import Pool

from ..background import Loop
from ..engine.confirmations import with_retry_count
from ..engine.stats import WorkerStats
from ..errors import StoreUnavailableError
from ..settings import Settings
from ..store import ControlStore, DeploymentRecords
from ..store.acks import AckStore
from .registry import worker_id
from .webhook import Webhook, WebhookError, notice_body, retry_delay_seconds

log = logging.getLogger(__name__)

ROLE = "ack-schedule"
LEASE_SECONDS = 5.0
# How often the leader looks at the schedules, and how often the others ask to lead.
ROUND_SECONDS = 0.2
FOLLOW_SECONDS = 1.0
# Taken per round at most: a backlog is worked off over several rounds.
DUE_PER_ROUND = 200
EXPIRED_PER_ROUND = 500
# Notices in flight at once, and the size of one control message of redeliveries.
WEBHOOK_CONCURRENCY = 8
REDELIVERY_MESSAGE_BYTES = 512 * 1024


class AckSchedule:
    """This worker's bid to run the schedules, and the running of them while it leads."""

    def __init__(self, settings: Settings, store: AckStore, deployment: DeploymentRecords,
                 control: ControlStore, stats: WorkerStats) -> None:
        self.settings = settings
        self.store = store
        self.deployment = deployment
        self.control = control
        self.stats = stats
        self.webhook = Webhook(settings) if settings.ack_webhook_url else None
        self.leading = False
        self._senders = Pool(WEBHOOK_CONCURRENCY)
        self._loop = Loop(self._round, "acknowledgement schedule", on_failure=self._lost)

    @property
    def holder(self) -> str:
        return worker_id(self.settings)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        """Stop, and let another worker lead at once."""
        self._loop.stop()
        self._senders.kill(block=True, timeout=2)
        if self.leading:
            try:
                self.deployment.resign(ROLE, self.holder)
            except StoreUnavailableError:
                pass
            self.leading = False

    def _lost(self, error: Exception) -> None:
        self.leading = False

    def _round(self) -> float:
        if not self.deployment.lead(ROLE, self.holder, LEASE_SECONDS):
            if self.leading:
                log.info("another worker runs the acknowledgement schedules now")
            self.leading = False
            return FOLLOW_SECONDS
        if not self.leading:
            log.info("this worker runs the acknowledgement schedules")
        self.leading = True
        self.run_once()
        return ROUND_SECONDS

    def run_once(self, now_ms: int | None = None) -> None:
        """One pass over the schedules (the leader calls it every ROUND_SECONDS)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        due = self.store.take_due(now_ms, DUE_PER_ROUND)
        if due:
            self._send_redeliveries(due)
        expired = self.store.expire(now_ms, EXPIRED_PER_ROUND, notify=self.webhook is not None)
        self.stats.expired_unacknowledged += len(expired)
        free = self._senders.free_count()
        if self.webhook is not None and free:
            for record in self.store.take_notices(now_ms, free):
                self._senders.spawn(self._notify, record)

    def _send_redeliveries(self, due: list) -> None:
        batch: list[dict[str, Any]] = []
        size = 0
        for redelivery in due:
            body = with_retry_count(redelivery.body, redelivery.retries).decode()
            batch.append({"user": redelivery.user, "id": redelivery.message_id,
                          "event_id": redelivery.event_id, "type": redelivery.type,
                          "priority": redelivery.priority, "body": body})
            size += len(body)
            if size >= REDELIVERY_MESSAGE_BYTES:
                self.control.send({"op": "redeliver", "items": batch})
                batch, size = [], 0
        if batch:
            self.control.send({"op": "redeliver", "items": batch})

    def _notify(self, record: dict[str, str]) -> None:
        """Send one notice and record how it went."""
        message_id = record.get("id", "")
        attempt = int(record.get("webhook_attempts", 1))
        try:
            with gevent.Timeout(self.settings.ack_webhook_timeout_seconds + 1, WebhookError):
                self.webhook.send(notice_body(record))
        except WebhookError as exc:
            now_ms = int(time.time() * 1000)
            if attempt >= self.settings.ack_webhook_max_attempts:
                log.warning("expiry notice for %s not taken after %d attempts (%s); giving up",
                            message_id, attempt, exc)
                self.stats.webhook_failed += 1
                self._done(message_id, "failed", now_ms)
            else:
                log.info("expiry notice for %s not taken (%s); attempt %d of %d",
                         message_id, exc, attempt, self.settings.ack_webhook_max_attempts)
                self.stats.webhook_retried += 1
                delay_ms = int(retry_delay_seconds(attempt) * 1000)
                self._done(message_id, "retry", now_ms, now_ms + delay_ms)
            return
        self.stats.webhook_delivered += 1
        self._done(message_id, "delivered", int(time.time() * 1000))

    def _done(self, message_id: str, outcome: str, now_ms: int, retry_at_ms: int = 0) -> None:
        try:
            self.store.notice_done(message_id, outcome, now_ms, retry_at_ms)
        except StoreUnavailableError as exc:
            # Its claim lapses and the notice goes again: at least once, never lost.
            log.warning("expiry notice for %s: outcome not recorded (%s)", message_id, exc)
