"""Health: liveness and readiness in one document; 503 when this instance cannot deliver."""

from __future__ import annotations

import os
import time

from flask import Blueprint, jsonify

from .. import __version__
from ..errors import StoreUnavailableError
from .extension import push_service

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    """200 when Redis answers, this worker's reader has read recently and its own
    probes come through the pipeline, else 503."""
    service = push_service()
    service.start()
    checks = {}
    try:
        checks["redis"] = {"ok": True, "latency_ms": round(service.store.ping() * 1000, 2)}
    except StoreUnavailableError as exc:
        checks["redis"] = {"ok": False, "error": exc.message}
    reader = service.reader.status()
    now = time.time()
    since_read = None if reader.last_read_ok is None else now - reader.last_read_ok
    # A healthy reader completes a blocking read at least every READER_BLOCK_MS.
    reader_deadline = service.settings.reader_block_ms / 1000 * 2 + 3
    checks["reader"] = {
        "ok": reader.alive and since_read is not None and since_read <= reader_deadline,
        "alive": reader.alive,
        "seconds_since_last_read": None if since_read is None else round(since_read, 3),
        "lag_seconds": round(reader.lag_seconds, 3),
        "last_error": reader.last_error,
        "position": service.hub.position.event_id,
    }
    probe = service.engine.probe
    if probe.enabled:
        age = probe.age()
        checks["delivery"] = {
            "ok": probe.healthy(),
            "seconds_since_own_probe": None if age is None else round(age, 3),
            "probe_round_trip_ms": None if probe.round_trip_seconds is None
            else round(probe.round_trip_seconds * 1000, 2),
            "interval_seconds": probe.interval,
        }
    ok = all(check["ok"] for check in checks.values())
    body = {
        "status": "ok" if ok else "unavailable",
        "version": __version__,
        "pid": os.getpid(),
        "connections": {"worker": service.hub.connection_count(),
                        "instance": service.streams.budget.total()},
        "checks": checks,
    }
    response = jsonify(body)
    response.status_code = 200 if ok else 503
    if not ok:
        response.headers["Retry-After"] = "2"
    return response
