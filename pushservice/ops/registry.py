"""The connection registry: every live stream of every worker and instance, in Redis.

Each worker records a connection when it opens and removes it when it closes, in the
background and in batches (a stream never waits for Redis to open). Every
REGISTRY_REFRESH_SECONDS it renews its connections' TTL (with their frame counts and
resume positions), publishes a snapshot of its own figures, and adds its counter deltas
to the shared counters; nothing is written per delivered message. A worker or instance
that dies without cleaning up stops renewing, and its entries disappear within
REGISTRY_TTL_SECONDS. Closing a connection anywhere goes through the control channel
that every worker listens to.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import deque
from typing import Any

import gevent
from gevent.event import Event

from ..background import Loop
from ..engine.stats import DeltaTracker, percentile
from ..engine.subscription import CloseReason, Subscription
from ..engine.worker import WorkerEngine
from ..errors import NotFoundError, StoreUnavailableError
from ..settings import Settings
from ..store import ConnectionRecords, ControlStore, DeploymentRecords

log = logging.getLogger(__name__)

# Connections renewed per round trip to Redis.
RENEW_SLICE = 100
# Admissions or removals written per round trip at most.
WRITE_BATCH = 2000
# How long an operator's close request waits to see the connection gone.
CLOSE_CONFIRM_SECONDS = 3.0
# While an operator watches (the admin dashboard is open), every worker publishes its
# figures this often instead of every REGISTRY_REFRESH_SECONDS; a watch lasts at most
# MAX_WATCH_SECONDS unless renewed.
WATCHED_REFRESH_SECONDS = 1.0
MAX_WATCH_SECONDS = 30.0


def worker_id(settings: Settings) -> str:
    """This worker process across the deployment: its instance's name and its pid."""
    return f"{settings.instance_name}:{os.getpid()}"


class ConnectionRegistry:
    """This worker's part of the registry, and the deployment-wide views of it.

    It reads this worker's figures from its engine (hub, reader, stats); it writes
    through ``records`` (connections), ``deployment`` (snapshots and counters) and
    ``control`` (commands to every worker).
    """

    def __init__(self, engine: WorkerEngine, records: ConnectionRecords,
                 deployment: DeploymentRecords, control: ControlStore) -> None:
        self.settings = engine.settings
        self.engine = engine
        self.hub = engine.hub
        self.stats = engine.stats
        self.records = records
        self.deployment = deployment
        self.control = control
        self.stream_length: int | None = None
        # Admissions and removals waiting to be written, in order: a crowd arriving (or
        # leaving) at once shares round trips, and no stream waits for Redis to open.
        self._pending: deque[tuple[str, Subscription, dict[str, Any] | None]] = deque()
        self._pending_admissions: set[str] = set()
        self._wake = Event()
        self._deltas = DeltaTracker()
        self._watched_until = 0.0
        self._watched = Event()
        self._loops = (Loop(self._renew_round, "registry renewal"),
                       Loop(self._listen, "control channel"),
                       Loop(self._write_pending, "registry writes"),
                       Loop(self._publish_while_watched, "figures while watched"))
        self._reported_frames: dict[str, tuple[int, tuple[int, int]]] = {}

    @property
    def worker_id(self) -> str:
        return worker_id(self.settings)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start renewing and listening in this process. Idempotent."""
        for loop in self._loops:
            loop.start()

    def stop(self) -> None:
        """Stop the greenlets, write what is still waiting and withdraw this worker's
        snapshot (best effort: records left behind expire by themselves)."""
        for loop in self._loops:
            loop.stop()
        try:
            self.write_pending()
            self.deployment.remove_worker(self.worker_id)
        except StoreUnavailableError:
            pass

    # -- one connection -----------------------------------------------------------------

    def admit(self, subscription: Subscription, remote_addr: str | None = None,
              user_agent: str | None = None) -> None:
        """Record ``subscription``, in the background: the stream does not wait for
        Redis. If its user turns out to hold MAX_CONNECTIONS_PER_USER streams already
        (anywhere), the stream is closed with a ``closing`` event that says so and when to
        come back."""
        record = {
            "connection_id": subscription.id,
            "instance": self.settings.instance_name,
            "worker": os.getpid(),
            "kind": subscription.kind,
            "user": subscription.user,
            "topics": subscription.topics,
            "remote_addr": remote_addr,
            "user_agent": user_agent,
            "connected_at": f"{subscription.connected_at:.3f}",
            "frames_sent": 0,
            "last_event_id": None,
        }
        self.stats.connections_opened += 1
        self._pending_admissions.add(subscription.id)
        self._pending.append(("admit", subscription, record))
        self._wake.set()

    def remove(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (in the background; if Redis stays away, its record
        expires by itself within REGISTRY_TTL_SECONDS)."""
        self.stats.connections_closed += 1
        self._reported_frames.pop(subscription.id, None)
        self._pending.append(("remove", subscription, None))
        self._wake.set()

    def _write_pending(self) -> None:
        self._wake.wait()
        self._wake.clear()
        self.write_pending()
        if self._pending:
            self._wake.set()

    def write_pending(self) -> None:
        """Write what is waiting now (admissions and removals, WRITE_BATCH at a time, one
        round trip each); what fails stays waiting, to be retried."""
        pending = self._pending
        while pending:
            self._write_batch([pending[index]
                               for index in range(min(WRITE_BATCH, len(pending)))])

    def _write_batch(self, batch: list[tuple[str, Subscription, dict[str, Any] | None]]
                     ) -> None:
        pending = self._pending
        removed = {subscription.id for op, subscription, _ in batch if op == "remove"}
        # A connection that came and went within one batch need not be written at all.
        admits = [(subscription, record) for op, subscription, record in batch
                  if op == "admit" and subscription.id not in removed]
        admitted = {subscription.id for op, subscription, _ in batch if op == "admit"}
        removes = [(subscription.id, subscription.user) for op, subscription, _ in batch
                   if op == "remove" and subscription.id not in admitted]
        if admits:
            results = self.records.admit(
                [(record, subscription.user) for subscription, record in admits],
                self.settings.max_connections_per_user, self.settings.registry_ttl_seconds)
            for (subscription, _), ok in zip(admits, results):
                if not ok:
                    self._over_user_limit(subscription)
        if removes:
            self.records.remove(removes)
        for _ in batch:
            pending.popleft()
        self._pending_admissions.difference_update(
            subscription.id for op, subscription, _ in batch if op == "admit")

    def _over_user_limit(self, subscription: Subscription) -> None:
        limit = self.settings.max_connections_per_user
        self.stats.user_limit_refusals += 1
        retry_ms = int(self.settings.registry_refresh_seconds * 1000 * random.uniform(0.5, 1.5))
        subscription.close("too_many_user_connections", {
            "retry_ms": retry_ms, "refused": True, "details": {"limit": limit},
            "message": f"User {subscription.user!r} already holds {limit} streams "
                       "(MAX_CONNECTIONS_PER_USER); close one or retry later."})

    # -- periodic renewal ---------------------------------------------------------------

    def _renew_round(self) -> float:
        self.renew()
        return self.settings.registry_refresh_seconds

    def renew(self) -> None:
        """Renew this worker's connections and publish its snapshot and counters."""
        ttl = self.settings.registry_ttl_seconds
        subscriptions = self.hub.subscriptions()
        # Small slices, each its own round trip: renewing thousands of connections at once
        # would hold the worker for tens of milliseconds, and every stream with it.
        for start in range(0, len(subscriptions), RENEW_SLICE):
            updates = [self._renewal(subscription)
                       for subscription in subscriptions[start:start + RENEW_SLICE]
                       if self.hub.get(subscription.id) is subscription
                       and subscription.id not in self._pending_admissions]
            if updates:
                self.records.renew(updates, ttl)
            gevent.sleep(0)
        self.publish_figures()

    def publish_figures(self) -> None:
        """Publish this worker's snapshot, add its counter deltas to the shared counters
        and note the stream's length."""
        counters = self.stats.counters()
        self.deployment.publish_worker(self.worker_id, self.snapshot(counters),
                                       self._deltas.since_last(counters),
                                       self.settings.registry_ttl_seconds)
        self.stream_length = self.engine.store.length()

    # -- watched by an operator -----------------------------------------------------------

    def watch(self, seconds: float) -> None:
        """Ask every worker of the deployment to publish its figures each second for the
        next ``seconds`` (at most MAX_WATCH_SECONDS): a dashboard is open."""
        self.control.send({"op": "watch", "seconds": seconds})

    def _watched_for(self, seconds: object) -> None:
        try:
            seconds = min(max(float(seconds), 0.0), MAX_WATCH_SECONDS)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        self._watched_until = max(self._watched_until, time.monotonic() + seconds)
        self._watched.set()

    def _publish_while_watched(self) -> float:
        if time.monotonic() >= self._watched_until:
            self._watched.clear()
            self._watched.wait()
        self.publish_figures()
        return WATCHED_REFRESH_SECONDS

    def _renewal(self, subscription: Subscription) -> tuple[str, str | None, dict[str, Any]]:
        """What renewing ``subscription`` writes: its frame count and resume position
        when they changed since the last renewal."""
        position = subscription.position
        state = (subscription.frames_sent, position.key)
        fields: dict[str, Any] = {}
        if self._reported_frames.get(subscription.id) != state:
            self._reported_frames[subscription.id] = state
            fields = {"frames_sent": subscription.frames_sent}
            if position.known:
                fields["last_event_id"] = position.event_id
        return subscription.id, subscription.user, fields

    def snapshot(self, counters: dict[str, int] | None = None) -> dict[str, Any]:
        """This worker's figures, as the stats API aggregates them."""
        hub = self.hub.status()
        reader = self.engine.reader.status()
        return {
            "worker_id": self.worker_id,
            "instance": self.settings.instance_name,
            "pid": os.getpid(),
            "started_at": reader.started_at,
            "updated_at": time.time(),
            "connections": hub.connections,
            "connections_by_kind": hub.connections_by_kind,
            "counters": counters or self.stats.counters(),
            "latency_buckets": self.stats.latency.counts(),
            "reader": {"alive": reader.alive, "lag_seconds": round(reader.lag_seconds, 3),
                       "last_read_ok": reader.last_read_ok, "last_error": reader.last_error},
            "probe_age_seconds": self.engine.probe.age(),
        }

    # -- control ------------------------------------------------------------------------

    def _listen(self) -> None:
        for command in self.control.listen():
            self.handle(command)

    def handle(self, command: dict[str, Any]) -> None:
        """Carry out a command from the control channel if it concerns this worker."""
        if command.get("op") == "close":
            subscription = self.hub.get(str(command.get("connection_id")))
            if subscription is not None:
                log.info("closing connection %s at an operator's request", subscription.id)
                subscription.close(CloseReason.KICKED,
                                   {"retry_ms": self.settings.sse_retry_ms})
        elif command.get("op") == "watch":
            self._watched_for(command.get("seconds"))
        elif command.get("op") == "redeliver" and self.engine.confirmations is not None:
            # Messages not acknowledged in time, for this worker's streams of their users.
            self.engine.confirmations.deliver(command.get("items") or [])

    def close_connection(self, connection_id: str) -> dict[str, Any]:
        """Close a connection wherever it lives. NotFoundError (404) when unknown.

        Waits up to CLOSE_CONFIRM_SECONDS for its worker to confirm; ``closed`` is False
        when the client has not been let go yet (its final frame is still on the way).
        """
        record = self.records.get(connection_id)
        if record is None:
            raise NotFoundError(f"No open connection {connection_id!r}.",
                                details={"connection_id": connection_id},
                                code="connection_not_found")
        self.control.send({"op": "close", "connection_id": connection_id})
        deadline = time.monotonic() + CLOSE_CONFIRM_SECONDS
        closed = False
        while time.monotonic() < deadline:
            if self.records.get(connection_id) is None:
                closed = True
                break
            gevent.sleep(0.05)
        return {"connection_id": connection_id, "found": True, "closed": closed,
                "instance": record.get("instance"), "worker": record.get("worker")}

    # -- deployment-wide views ----------------------------------------------------------

    def instances(self) -> list[dict[str, Any]]:
        """The instances that keep their registration alive."""
        return self.deployment.instances()

    def list(self, user: str | None = None, topic: str | None = None,
             instance: str | None = None, cursor: str | None = None,
             limit: int = 100) -> dict[str, Any]:
        """A page of connections across all workers and instances, oldest first."""

        def keep(record: dict[str, Any]) -> bool:
            return ((user is None or record.get("user") == user)
                    and (topic is None or topic in record.get("topics", ()))
                    and (instance is None or record.get("instance") == instance))

        records, next_cursor = self.records.scan(cursor, limit, keep)
        return {"connections": [_public(record) for record in records],
                "count": len(records), "next_cursor": next_cursor}

    def deployment_stats(self) -> dict[str, Any]:
        """Connections, message counters, stream and latency figures of the deployment."""
        snapshots = self.deployment.worker_snapshots()
        counters = self.deployment.counters()
        by_instance: dict[str, int] = {}
        by_worker: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        buckets: list[int] | None = None
        lags: dict[str, float] = {}
        for snapshot in snapshots:
            count = snapshot["connections"]
            by_instance[snapshot["instance"]] = by_instance.get(snapshot["instance"], 0) + count
            by_worker[snapshot["worker_id"]] = count
            for kind, number in snapshot["connections_by_kind"].items():
                by_kind[kind] = by_kind.get(kind, 0) + number
            window = snapshot["latency_buckets"]
            buckets = window if buckets is None else [a + b for a, b in zip(buckets, window)]
            lags[snapshot["worker_id"]] = snapshot["reader"]["lag_seconds"]
        buckets = buckets or []
        p50, p99 = percentile(buckets, 0.5), percentile(buckets, 0.99)
        return {
            "connections": {"total": sum(by_worker.values()), "by_instance": by_instance,
                            "by_worker": by_worker, "by_kind": by_kind},
            "messages": {
                "published": counters.get("published", 0),
                "delivered": counters.get("delivered", 0),
                "failed": counters.get("publish_failed", 0),
                "slow_consumer_disconnects": counters.get("slow_consumers", 0),
                "replayed": counters.get("replayed", 0),
                "history_lost": counters.get("history_lost", 0),
            },
            "stream": {"length": self.engine.store.length(),
                       "reader_lag_seconds": {"max": max(lags.values(), default=0.0),
                                              "by_worker": lags}},
            "latency": {"window_seconds": 60, "samples": sum(buckets),
                        "p50_ms": None if p50 is None else p50 * 1000,
                        "p99_ms": None if p99 is None else p99 * 1000},
            "workers": len(snapshots),
            "as_of": time.time(),
        }


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "connection_id": record.get("connection_id"),
        "instance": record.get("instance"),
        "worker": record.get("worker"),
        "kind": record.get("kind"),
        "user": record.get("user"),
        "topics": record.get("topics", []),
        "remote_addr": record.get("remote_addr") or None,
        "user_agent": record.get("user_agent") or None,
        "connected_at": record.get("connected_at"),
        "frames_sent": record.get("frames_sent", 0),
        "last_event_id": record.get("last_event_id"),
    }
