"""Prometheus metrics. The only module that imports prometheus_client.

Under gunicorn every worker writes its values to PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py before the workers start), and /metrics, served by any worker, adds up
all of them; the master marks dead workers so their live gauges disappear. The hot path
only bumps plain integers (stats.py); a greenlet per worker copies them into Prometheus
once a second. No label carries an unbounded value.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import time
from collections.abc import Callable

import gevent
from flask import Flask, Response, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder

from ..background import Loop
from ..engine.stats import LATENCY_BUCKETS, DeltaTracker
from ..engine.worker import WorkerEngine
from ..errors import ForbiddenError
from ..settings import Settings

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
# Latency observations copied per flush at most (a random sample beyond that).
MAX_OBSERVATIONS_PER_FLUSH = 256

# HTTP methods counted by name. Any other method a client sends counts as "other": a
# label value per invented method would grow the metrics without bound.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The environ key where a request's start time waits for its response.
_STARTED = "pushservice.started"

# The known values of the labelled counters. Each is given its series (at 0) when the
# metrics are created, so that a fresh instance already shows every family and every
# value: dashboards see 0 rather than "no data", and rate() sees the first increment.
SEND_ENDPOINTS = ("send", "broadcast", "batch")
# The error codes a refused or failed publish is answered with (errors.py, and the codes
# raised on the way: web/publish.py, web/body.py, message.py, auth.py, store/messages.py).
PUBLISH_FAILURE_REASONS = (
    "bad_request", "invalid_json", "invalid_body", "request_timeout", "validation_failed",
    "unsupported_media_type", "payload_too_large", "message_too_large", "batch_too_large",
    "missing_token", "invalid_token", "token_expired", "token_not_yet_valid",
    "invalid_issuer", "invalid_audience",
    "publish_forbidden", "service_mismatch", "topic_forbidden", "broadcast_forbidden",
    "message_id_taken", "rate_limited", "redis_unavailable", "internal_error",
)
# Refusals answered with a short stream that says when to come back (README, Reliability).
STREAM_REFUSAL_REASONS = ("too_many_connections", "not_ready", "redis_unavailable",
                          "too_many_user_connections")
# Why a resuming client was told ``history-lost`` (engine/event_stream.py).
HISTORY_LOST_REASONS = ("history_trimmed", "stream_reset", "unknown_position",
                        "malformed_last_event_id", "low_priority_shed")

# stats.py counter -> (metric attribute, label values)
_COUNTER_MAP = {
    "delivered": "frames_delivered",
    "slow_consumers": "slow_consumers",
    "replayed": "replayed_frames",
    "read_errors": "reader_errors",
    "expired_skipped": "expired_skipped",
    "connections_opened": "connections_opened",
    "connections_closed": "connections_closed",
    "acknowledged": "acknowledgements",
    "inbox_overflow": "inbox_overflow",
    "expired_unacknowledged": "expired_unacknowledged",
    "shed_low": "low_priority_shed",
}
# stats.py counter -> (labelled metric attribute, its label value)
_LABELLED_COUNTER_MAP = {
    "redelivered_on_connect": ("redeliveries", "connect"),
    "redelivered_on_timeout": ("redeliveries", "timeout"),
    "webhook_delivered": ("ack_webhook", "delivered"),
    "webhook_retried": ("ack_webhook", "retried"),
    "webhook_failed": ("ack_webhook", "failed"),
}


class PushMetrics:
    """The service's metrics, registered in a registry of their own (one per app)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge(
            "message_push_connections_total", "Open SSE connections.",
            registry=r, multiprocess_mode="livesum")
        self.messages_sent = Counter(
            "message_push_messages_sent", "Messages accepted and stored for delivery.",
            ["endpoint"], registry=r)
        self.messages_failed = Counter(
            "message_push_messages_failed",
            "Messages refused or not stored, by reason (the error code).",
            ["reason"], registry=r)
        self.duration = Histogram(
            "message_push_message_duration_seconds",
            "From publish (Redis took the message) to the frame written to a client.",
            registry=r, buckets=LATENCY_BUCKETS)
        self.frames_delivered = Counter(
            "message_push_frames_delivered", "Message frames written to clients.", registry=r)
        self.slow_consumers = Counter(
            "message_push_slow_consumer_disconnects",
            "Connections cut off because they did not keep up.", registry=r)
        self.replayed_frames = Counter(
            "message_push_replayed_frames", "Frames sent by resumes (Last-Event-ID).",
            registry=r)
        self.stream_refusals = Counter(
            "message_push_stream_refusals",
            "Stream requests answered with a short stream that says when to come back, by "
            "reason (capacity, not ready, Redis unavailable, the user's limit).",
            ["reason"], registry=r)
        self.history_lost = Counter(
            "message_push_history_lost", "history-lost events sent, by reason.",
            ["reason"], registry=r)
        self.reader_errors = Counter(
            "message_push_reader_errors", "Failed reads of the stream (Redis errors).",
            registry=r)
        self.expired_skipped = Counter(
            "message_push_expired_skipped", "Messages not delivered because their TTL ran out.",
            registry=r)
        self.connections_opened = Counter(
            "message_push_connections_opened", "SSE connections opened.", registry=r)
        self.connections_closed = Counter(
            "message_push_connections_closed", "SSE connections closed.", registry=r)
        # Delivery confirmation (docs/delivery-confirmation.md).
        self.acknowledgements = Counter(
            "message_push_acknowledgements",
            "Messages acknowledged by a user they were for (repeats not counted).",
            registry=r)
        self.redeliveries = Counter(
            "message_push_redeliveries",
            "Confirmation-requiring messages delivered again, by trigger (connect: from the "
            "user's inbox when a stream opened; timeout: not acknowledged in time).",
            ["trigger"], registry=r)
        self.inbox_overflow = Counter(
            "message_push_inbox_overflow",
            "Messages pushed out of a user's full inbox (ACK_INBOX_MAX_MESSAGES), the "
            "oldest of the lowest priority first; they are not delivered again.",
            registry=r)
        self.expired_unacknowledged = Counter(
            "message_push_expired_unacknowledged",
            "Confirmation-requiring messages whose TTL ran out before every user they were "
            "for acknowledged them.", registry=r)
        self.ack_webhook = Counter(
            "message_push_ack_webhook",
            "Expiry notice attempts by outcome (delivered, retried, failed: attempts spent).",
            ["outcome"], registry=r)
        self.low_priority_shed = Counter(
            "message_push_low_priority_shed",
            "Low-priority messages let go of to make room in a slow client's full mailbox "
            "(the client is told with history-lost, reason low_priority_shed).", registry=r)
        self.stream_length = Gauge(
            "message_push_stream_length", "Entries in the Redis Stream (the queue length).",
            registry=r, multiprocess_mode="livemax")
        self.reader_lag = Gauge(
            "message_push_reader_lag_seconds",
            "How far behind the newest message the slowest worker's reader is.",
            registry=r, multiprocess_mode="livemax")
        self.probe_age = Gauge(
            "message_push_delivery_probe_age_seconds",
            "Seconds since the worker that lags most last saw its own health probe come "
            "through the pipeline (above twice HEALTH_PROBE_SECONDS: not delivering).",
            registry=r, multiprocess_mode="livemax")
        self.reader_up = Gauge(
            "message_push_reader_up", "Workers whose reader read successfully of late.",
            registry=r, multiprocess_mode="livesum")
        self.http_duration = Histogram(
            "message_push_http_request_duration_seconds",
            "HTTP request duration by Flask endpoint, method and status (streams: until "
            "the stream starts).", ["endpoint", "method", "status"], registry=r,
            buckets=LATENCY_BUCKETS)
        self.http_requests = Counter(
            "message_push_http_request", "HTTP requests by method and status.",
            ["method", "status"], registry=r)
        # (endpoint, method, status) -> the two children: labels() costs more than the
        # observation itself, and the set of keys is small and bounded.
        self._http_children: dict[tuple[str, str, int], tuple] = {}
        self._sent_children: dict[str, object] = {}
        self._deltas = DeltaTracker()
        self._lost_deltas = DeltaTracker()
        self._flusher: Loop | None = None
        self._initialise_known_labels()

    def _initialise_known_labels(self) -> None:
        """Every known label value gets its series now, at 0 (see SEND_ENDPOINTS)."""
        for endpoint in SEND_ENDPOINTS:
            self._sent_children[endpoint] = self.messages_sent.labels(endpoint)
        for counter, reasons in ((self.messages_failed, PUBLISH_FAILURE_REASONS),
                                 (self.stream_refusals, STREAM_REFUSAL_REASONS),
                                 (self.history_lost, HISTORY_LOST_REASONS),
                                 (self.redeliveries, ("connect", "timeout")),
                                 (self.ack_webhook, ("delivered", "retried", "failed"))):
            for reason in reasons:
                counter.labels(reason)

    # -- binding ------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """HTTP request metrics by endpoint (bounded labels), and the /metrics view."""
        app.before_request(self._request_started)
        app.after_request(self._request_finished)
        app.add_url_rule("/metrics", "metrics", self._view)

    @staticmethod
    def _request_started() -> None:
        request.environ[_STARTED] = time.perf_counter()

    def _request_finished(self, response: Response) -> Response:
        started = request.environ.get(_STARTED)
        endpoint = request.endpoint or "none"
        if started is None or endpoint == "metrics":
            return response
        method = request.method if request.method in HTTP_METHODS else "other"
        key = (endpoint, method, response.status_code)
        children = self._http_children.get(key)
        if children is None:
            status = str(response.status_code)
            children = self._http_children[key] = (
                self.http_duration.labels(endpoint, method, status),
                self.http_requests.labels(method, status))
        children[0].observe(time.perf_counter() - started)
        children[1].inc()
        return response

    def count_sent(self, endpoint: str, messages: int) -> None:
        """Messages accepted through ``endpoint`` (send, broadcast, batch)."""
        child = self._sent_children.get(endpoint)
        if child is None:
            child = self._sent_children[endpoint] = self.messages_sent.labels(endpoint)
        child.inc(messages)

    def _view(self):
        self._check_access()
        encode, content_type = choose_encoder(request.headers.get("Accept"))
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Adding up every worker's files takes a while with many workers: do it on a
            # thread, so that this worker's streams keep flowing during a scrape.
            content = gevent.get_hub().threadpool.apply(_collect_workers, (encode,))
        else:
            content = encode(self.registry)
        return Response(content, content_type=content_type)

    def _check_access(self) -> None:
        if self.settings.metrics_require_admin:
            from ..auth import admin_only

            admin_only()
        networks = self.settings.metrics_allowed_networks
        if networks:
            address = ipaddress.ip_address(request.remote_addr or "0.0.0.0")
            if not any(address in ipaddress.ip_network(net, strict=False) for net in networks):
                raise ForbiddenError("Metrics are not served to this address "
                                     "(METRICS_ALLOWED_NETWORKS).", code="metrics_forbidden")

    # -- flushing -----------------------------------------------------------------------

    def start(self, engine: WorkerEngine,
              stream_length: Callable[[], int | None] = lambda: None) -> None:
        """Copy the worker's figures into Prometheus every second. Idempotent."""
        if self._flusher is None:
            def flush() -> float:
                self.flush(engine, stream_length())
                return FLUSH_SECONDS

            self._flusher = Loop(flush, "metrics flush")
        self._flusher.start()

    def flush(self, engine: WorkerEngine, stream_length: int | None = None) -> None:
        stats = engine.stats
        for name, delta in self._deltas.since_last(stats.counters()).items():
            attribute = _COUNTER_MAP.get(name)
            if attribute is not None and delta > 0:
                getattr(self, attribute).inc(delta)
            elif name == "user_limit_refusals" and delta > 0:
                # Told after the stream opened, when the registry write found the limit.
                self.stream_refusals.labels("too_many_user_connections").inc(delta)
            elif name in _LABELLED_COUNTER_MAP and delta > 0:
                labelled, value = _LABELLED_COUNTER_MAP[name]
                getattr(self, labelled).labels(value).inc(delta)
        for reason, delta in self._lost_deltas.since_last(stats.history_lost_reasons).items():
            self.history_lost.labels(reason).inc(delta)
        observations = stats.drain_latencies()
        if len(observations) > MAX_OBSERVATIONS_PER_FLUSH:
            observations = random.sample(observations, MAX_OBSERVATIONS_PER_FLUSH)
        for seconds in observations:
            self.duration.observe(seconds)
        self.connections.set(engine.hub.connection_count())
        status = engine.reader.status()
        self.reader_lag.set(status.lag_seconds)
        self.reader_up.set(1 if status.alive and status.last_error is None else 0)
        probe_age = engine.probe.age()
        if probe_age is not None:
            self.probe_age.set(probe_age)
        if stream_length is not None:
            self.stream_length.set(stream_length)

    def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.stop()


def _collect_workers(encode: Callable[[CollectorRegistry], bytes]) -> bytes:
    """Every worker's values, added up, as ``encode`` writes them."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return encode(registry)
