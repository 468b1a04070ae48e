"""What the admin dashboard shows: the deployment's figures, once a second, and a tail of
the newest messages.

The figures are the ones the service keeps anyway: the workers' snapshots and the shared
counters in Redis (what ``GET /api/v1/connections/stats`` reads), the instance records and
the stream's length. While a dashboard is open, every worker publishes its snapshot each
second instead of every REGISTRY_REFRESH_SECONDS (``ConnectionRegistry.watch``). The
tail comes from this worker's recent history (engine/recent.py): every worker reads the
whole stream, so it holds the newest messages of every topic. Nothing here runs per
published or delivered message.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections import deque
from typing import Any

import gevent
import orjson

from ..engine.reader import PROBE_TYPE
from ..engine.sse import encode_json_frame
from ..engine.worker import WorkerEngine
from ..errors import StoreUnavailableError
from ..store import Entry
from .registry import ConnectionRegistry

# Rates are averaged over this window, so that workers publishing their counters at
# different moments of the second do not make them jump.
RATE_WINDOW_SECONDS = 5.0
# Messages sent to one dashboard per tick at most (the newest), and the largest message
# body sent whole; longer ones go as the start of their text.
TAIL_PER_TICK = 50
TAIL_BODY_BYTES = 16384
TAIL_PREVIEW_BYTES = 2048
# What a tail filter may hold: topic characters and the globs * and ?.
TOPIC_FILTER = re.compile(r"[A-Za-z0-9_.:@*?~-]{1,256}")


class RateWindow:
    """Per-second rates of monotonic counters over the last ``window_seconds``."""

    def __init__(self, window_seconds: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window_seconds
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def add(self, now: float, counters: dict[str, int]) -> dict[str, float] | None:
        """Record ``counters`` at ``now``; the rates since the oldest sample of the window
        (None until two samples exist). A counter that went down (the shared counters
        were reset) restarts the window."""
        samples = self._samples
        if samples and any(counters.get(name, 0) < value
                           for name, value in samples[-1][1].items()):
            samples.clear()
        samples.append((now, dict(counters)))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        then, before = samples[0]
        elapsed = now - then
        if elapsed <= 0:
            return None
        return {name: (value - before.get(name, 0)) / elapsed for name, value in counters.items()}


def worker_problems(snapshot: dict[str, Any], now: float, *, reader_deadline: float,
                    probe_interval: float, refresh_seconds: float) -> list[str]:
    """Why a worker is unhealthy, from its snapshot: the checks of ``/health`` as it
    last reported them (empty when healthy)."""
    problems = []
    reader = snapshot.get("reader", {})
    updated = snapshot.get("updated_at") or 0.0
    if not reader.get("alive"):
        problems.append("reader not running")
    if reader.get("last_error"):
        problems.append(f"reader error: {reader['last_error']}")
    last_read = reader.get("last_read_ok")
    if last_read is None or updated - last_read > reader_deadline:
        problems.append("reader has not completed a read lately")
    probe_age = snapshot.get("probe_age_seconds")
    if probe_interval > 0 and probe_age is not None and probe_age > 2 * probe_interval:
        problems.append(f"its own probes have not come through for {probe_age:.0f} s")
    if now - updated > refresh_seconds + 2:
        problems.append(f"no figures for {now - updated:.0f} s")
    return problems


class DashboardFeed:
    """The figures and the tail of one open dashboard (it keeps the rate window and how
    far its tail has gone)."""

    def __init__(self, registry: ConnectionRegistry, engine: WorkerEngine) -> None:
        self.registry = registry
        self.engine = engine
        self.settings = engine.settings
        self._rates = RateWindow()
        self._tail_epoch: str | None = None
        self._tail_key = (0, 0)

    # -- figures ------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """The deployment's figures now; only this worker's when Redis does not answer
        (then ``error`` says so)."""
        now = time.time()
        try:
            redis_ms = self.engine.store.ping() * 1000
            stats = self.registry.deployment_stats()
            snapshots = self.registry.deployment.worker_snapshots()
            instances = self.registry.instances()
        except StoreUnavailableError as exc:
            return self._local_figures(now, exc.message)
        rates = self._rates.add(now, {"published": stats["messages"]["published"],
                                      "delivered": stats["messages"]["delivered"],
                                      "failed": stats["messages"]["failed"]})
        return {
            "as_of": now,
            "error": None,
            "redis": {"ok": True, "latency_ms": round(redis_ms, 2)},
            "connections": stats["connections"],
            "max_connections_per_instance": self.settings.max_connections,
            "messages": stats["messages"],
            "rates": _describe_rates(rates),
            "latency": stats["latency"],
            "stream": stats["stream"],
            "instances": self._instances(now, snapshots, instances),
        }

    def _local_figures(self, now: float, error: str) -> dict[str, Any]:
        snapshot = self.registry.snapshot()
        worker = snapshot["worker_id"]
        instance = self.settings.instance_name
        count = snapshot["connections"]
        return {
            "as_of": now,
            "error": f"Redis does not answer ({error}): these are this worker's own figures.",
            "redis": {"ok": False, "latency_ms": None},
            "connections": {"total": count, "by_instance": {instance: count},
                            "by_worker": {worker: count},
                            "by_kind": snapshot["connections_by_kind"]},
            "max_connections_per_instance": self.settings.max_connections,
            "messages": None,
            "rates": _describe_rates(None),
            "latency": None,
            "stream": {"length": None, "reader_lag_seconds": {
                "max": snapshot["reader"]["lag_seconds"],
                "by_worker": {worker: snapshot["reader"]["lag_seconds"]}}},
            "instances": self._instances(now, [snapshot], []),
        }

    def _instances(self, now: float, snapshots: list[dict[str, Any]],
                   records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each instance with its live workers and what is wrong with them."""
        settings = self.settings
        checks = {"reader_deadline": settings.reader_block_ms / 1000 * 2 + 3,
                  "probe_interval": settings.health_probe_seconds,
                  "refresh_seconds": settings.registry_refresh_seconds}
        by_name: dict[str, dict[str, Any]] = {}
        for record in records:
            by_name[record["instance"]] = {
                "instance": record["instance"], "address": record.get("address"),
                "port": record.get("port"), "version": record.get("version"),
                "started_at": record.get("started_at"), "expected_workers": record.get("workers"),
                "registered": True, "workers": []}
        for snapshot in sorted(snapshots, key=lambda s: (s["instance"], s["pid"])):
            instance = by_name.setdefault(snapshot["instance"], {
                "instance": snapshot["instance"], "address": None, "port": None,
                "version": None, "started_at": None, "expected_workers": None,
                "registered": False, "workers": []})
            reader = snapshot["reader"]
            last_read = reader.get("last_read_ok")
            instance["workers"].append({
                "worker_id": snapshot["worker_id"], "pid": snapshot["pid"],
                "connections": snapshot["connections"],
                "reader_lag_seconds": reader.get("lag_seconds"),
                "seconds_since_last_read": None if last_read is None
                else round(max(0.0, now - last_read), 1),
                "probe_age_seconds": snapshot.get("probe_age_seconds"),
                "figures_age_seconds": round(max(0.0, now - snapshot["updated_at"]), 1),
                "problems": worker_problems(snapshot, now, **checks),
            })
        for instance in by_name.values():
            workers = instance["workers"]
            problems = [f"{w['pid']}: {p}" for w in workers for p in w["problems"]]
            expected = instance["expected_workers"]
            if not workers:
                problems.append("no worker reports figures")
            elif expected and len(workers) < expected:
                problems.append(f"{len(workers)} of {expected} workers report figures")
            if not instance["registered"]:
                problems.append("not registered (no instance record)")
            instance["problems"] = problems
            instance["healthy"] = not problems
            instance["connections"] = sum(w["connections"] for w in workers)
        return sorted(by_name.values(), key=lambda i: i["instance"])

    # -- the tail -----------------------------------------------------------------------

    def tail(self, topic_filter: str | None = None,
             limit: int = TAIL_PER_TICK) -> list[dict[str, Any]]:
        """The messages routed since the last call (the first call: the newest ones),
        oldest first, at most ``limit`` (the newest of them), health probes left out;
        with ``topic_filter`` (a topic or a glob) only those with a matching topic."""
        recent = self.engine.hub.recent
        if recent.epoch != self._tail_epoch:
            self._tail_epoch, self._tail_key = recent.epoch, (0, 0)
        if recent.max_entries:
            candidates = recent.newest_first(self._tail_key)
        else:  # no history kept in memory: ask the stream for its newest entries
            candidates = self._newest_from_stream()
        picked: list[Entry] = []
        for entry in candidates:
            if len(picked) >= limit:
                break
            if entry.type != PROBE_TYPE and _matches(entry.topics, topic_filter):
                picked.append(entry)
        self._tail_key = max(self._tail_key, recent.newest_key)
        return [tail_item(entry) for entry in reversed(picked)]

    def _newest_from_stream(self) -> list[Entry]:
        try:
            entries = self.engine.store.read_newest(TAIL_PER_TICK, TAIL_BODY_BYTES * 8)
        except StoreUnavailableError:
            return []
        return [entry for entry in reversed(entries)
                if entry.epoch == self._tail_epoch and entry.key > self._tail_key]


def _matches(topics: tuple[str, ...], topic_filter: str | None) -> bool:
    if topic_filter is None:
        return True
    return any(fnmatch.fnmatchcase(topic, topic_filter) for topic in topics)


def tail_item(entry: Entry) -> dict[str, Any]:
    """One message as the tail shows it: the whole message when it is not too long,
    else the start of its text."""
    item: dict[str, Any] = {"event_id": entry.event_id, "type": entry.type,
                            "topics": list(entry.topics), "published_at_ms": entry.ms,
                            "bytes": len(entry.body)}
    if len(entry.body) <= TAIL_BODY_BYTES:
        item["message"] = orjson.loads(entry.body)
    else:
        item["preview"] = entry.body[:TAIL_PREVIEW_BYTES].decode("utf-8", "replace")
    return item


def _describe_rates(rates: dict[str, float] | None) -> dict[str, Any]:
    """Publish and delivery rates, and the share of publishes stored (None without any)."""
    if rates is None:
        return {"window_seconds": RATE_WINDOW_SECONDS, "published_per_second": None,
                "delivered_per_second": None, "failed_per_second": None, "success_rate": None}
    published, failed = rates["published"], rates["failed"]
    attempted = published + failed
    return {"window_seconds": RATE_WINDOW_SECONDS,
            "published_per_second": round(published, 2),
            "delivered_per_second": round(rates["delivered"], 2),
            "failed_per_second": round(failed, 2),
            "success_rate": None if attempted <= 0 else round(published / attempted, 4)}


# How often a dashboard gets its figures, and how long each request to watch lasts (it
# is renewed well before it runs out, while the dashboard stays open).
TICK_SECONDS = 1.0
WATCH_SECONDS = 5.0
WATCH_RENEW_SECONDS = 2.0
# What the dashboard's EventSource waits before reconnecting after the stream ended.
RETRY_MS = 2000


class DashboardStream:
    """One dashboard's ``text/event-stream`` body: ``hello`` once, then every second
    ``figures`` and, when messages came, ``messages``; a final ``closing`` when the
    worker stops (``shutdown``) or the token expires (``token_expired``).

    ``expires_at`` (Unix seconds) is when the viewer's token stops being valid, None
    for never. The server calls ``close()`` when the client goes away.
    """

    def __init__(self, feed: DashboardFeed, hello: dict[str, Any],
                 topic_filter: str | None = None, expires_at: float | None = None) -> None:
        self.feed = feed
        self.hello = hello
        self.topic_filter = topic_filter
        self.expires_at = expires_at
        self._frames = self._run()

    def __iter__(self) -> DashboardStream:
        return self

    def __next__(self) -> bytes:
        return next(self._frames)

    def close(self) -> None:
        self._frames.close()

    def _run(self):
        feed, hub = self.feed, self.feed.engine.hub
        yield encode_json_frame(self.hello, "hello", retry_ms=RETRY_MS)
        watched_at = float("-inf")
        while True:
            if hub.closing:
                yield encode_json_frame({"reason": "shutdown", "retry_ms": RETRY_MS},
                                        "closing")
                return
            if self.expires_at is not None and time.time() >= self.expires_at:
                yield encode_json_frame({"reason": "token_expired"}, "closing")
                return
            if time.monotonic() - watched_at >= WATCH_RENEW_SECONDS:
                watched_at = time.monotonic()
                try:
                    feed.registry.watch(WATCH_SECONDS)
                except StoreUnavailableError:
                    pass  # the figures say that Redis is away
            chunk = encode_json_frame(feed.figures(), "figures")
            messages = feed.tail(self.topic_filter)
            if messages:
                chunk += encode_json_frame(messages, "messages")
            yield chunk
            gevent.sleep(TICK_SECONDS)
