"""The admin dashboard's feed on fakeredis: rates, worker health from snapshots, the
deployment's figures, the tail of recent messages, and the event stream's frames."""

from __future__ import annotations

import time

import orjson
import pytest

from pushservice.engine.reader import PROBE_TYPE
from pushservice.engine.subscription import Subscription
from pushservice.errors import StoreUnavailableError
from pushservice.ops import dashboard as dashboard_module
from pushservice.ops.dashboard import (
    DashboardFeed,
    DashboardStream,
    RateWindow,
    worker_problems,
)
from pushservice.ops.registry import ConnectionRegistry
from pushservice.store import ConnectionRecords, ControlStore, DeploymentRecords, Entry

EPOCH = "e1"


@pytest.fixture
def registry(make_engine) -> ConnectionRegistry:
    engine = make_engine(instance_name="alpha")
    redis, keys = engine.store.connections, engine.store.keys
    return ConnectionRegistry(engine, ConnectionRecords(redis, keys),
                              DeploymentRecords(redis, keys), ControlStore(redis, keys))


@pytest.fixture
def feed(registry) -> DashboardFeed:
    return DashboardFeed(registry, registry.engine)


def entry(n: int, *topics: str, type_: str = "info", body: bytes | None = None) -> Entry:
    body = body if body is not None else orjson.dumps({"id": f"m{n}", "data": {"n": n}})
    return Entry(1000 + n, 0, EPOCH, topics or ("news",), type_, body, 0)


def parse_frames(chunks: list[bytes]) -> list[tuple[str, object]]:
    """(event, data) of each frame in ``chunks``."""
    frames = []
    for block in b"".join(chunks).decode().split("\n\n"):
        event = data = None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = orjson.loads(line[6:])
        if event:
            frames.append((event, data))
    return frames


# -- rates and health ---------------------------------------------------------------------


def test_rates_are_per_second_over_the_window():
    window = RateWindow(window_seconds=5)

    assert window.add(100.0, {"published": 10}) is None  # one sample: no rate yet
    window.add(101.0, {"published": 20})
    rates = window.add(102.0, {"published": 40})

    assert rates == {"published": 15.0}
    for second in range(103, 110):
        rates = window.add(float(second), {"published": 40 + 10 * (second - 102)})
    assert rates == pytest.approx({"published": 10.0})


def test_rates_start_over_when_the_counters_were_reset():
    window = RateWindow()
    window.add(100.0, {"published": 500})

    assert window.add(101.0, {"published": 3}) is None  # one sample since the reset


def test_a_worker_is_unhealthy_for_each_check_health_would_fail():
    now = 1000.0
    good = {"updated_at": now - 1, "probe_age_seconds": 2.0,
            "reader": {"alive": True, "last_error": None, "last_read_ok": now - 1.5}}
    checks = {"reader_deadline": 7.0, "probe_interval": 5.0, "refresh_seconds": 10.0}

    assert worker_problems(good, now, **checks) == []
    bad = {"updated_at": now - 30, "probe_age_seconds": 11.0,
           "reader": {"alive": False, "last_error": "ConnectionError: gone",
                      "last_read_ok": now - 60}}
    problems = worker_problems(bad, now, **checks)
    assert len(problems) == 5
    assert "reader error: ConnectionError: gone" in problems
    assert "no figures for 30 s" in problems


# -- figures ------------------------------------------------------------------------------


def test_figures_add_up_the_workers_snapshots_and_counters(feed, registry):
    registry.hub.register(Subscription(("news",), 10, kind="stream"))
    registry.stats.delivered = 7
    registry.publish_figures()
    registry.deployment.put_instance("alpha", {"instance": "alpha", "address": "10.0.0.5",
                                               "port": 8089, "version": "0.1.0",
                                               "workers": 1, "started_at": time.time()}, 30)

    figures = feed.figures()

    assert figures["error"] is None and figures["redis"]["ok"]
    assert figures["connections"]["total"] == 1
    assert figures["connections"]["by_instance"] == {"alpha": 1}
    assert figures["messages"]["delivered"] == 7
    assert figures["rates"]["published_per_second"] is None  # one sample so far
    (instance,) = figures["instances"]
    assert instance["instance"] == "alpha" and instance["registered"]
    assert instance["connections"] == 1 and len(instance["workers"]) == 1
    assert instance["workers"][0]["pid"] == registry.snapshot()["pid"]


def test_figures_without_redis_are_this_workers_own(feed, registry, monkeypatch):
    registry.hub.register(Subscription(("news",), 10, kind="stream"))

    def unavailable():
        raise StoreUnavailableError("Redis is away")

    monkeypatch.setattr(registry.engine.store, "ping", unavailable)
    figures = feed.figures()

    assert "Redis does not answer" in figures["error"]
    assert figures["redis"] == {"ok": False, "latency_ms": None}
    assert figures["connections"]["total"] == 1
    assert figures["instances"][0]["instance"] == "alpha"


# -- the tail -----------------------------------------------------------------------------


def test_the_tail_sends_new_messages_once_oldest_first_without_probes(feed, registry):
    recent = registry.hub.recent
    recent.restart(EPOCH, (0, 0))
    recent.add([entry(1), entry(2, "~probe", type_=PROBE_TYPE), entry(3)])

    first = feed.tail()
    recent.add([entry(4, "user:u1"), entry(5, "user:u2", "kb:k1")])
    second = feed.tail()

    assert [item["message"]["data"]["n"] for item in first] == [1, 3]
    assert [item["event_id"] for item in second] == [f"{EPOCH}-1004-0", f"{EPOCH}-1005-0"]
    assert second[1]["topics"] == ["user:u2", "kb:k1"]
    assert feed.tail() == []


def test_the_tail_filters_by_topic_glob_and_keeps_the_newest(feed, registry):
    recent = registry.hub.recent
    recent.restart(EPOCH, (0, 0))
    recent.add([entry(n, f"user:u{n % 3}") for n in range(1, 31)])

    picked = feed.tail("user:u1", limit=4)

    assert [item["message"]["data"]["n"] for item in picked] == [19, 22, 25, 28]
    recent.add([entry(31, "kb:k1"), entry(32, "user:u2")])
    assert [item["message"]["data"]["n"] for item in feed.tail("kb:*")] == [31]


def test_a_long_message_goes_as_the_start_of_its_text(feed, registry, monkeypatch):
    monkeypatch.setattr(dashboard_module, "TAIL_BODY_BYTES", 100)
    monkeypatch.setattr(dashboard_module, "TAIL_PREVIEW_BYTES", 20)
    recent = registry.hub.recent
    recent.restart(EPOCH, (0, 0))
    body = orjson.dumps({"data": {"text": "正在生成向量嵌入" * 20}})
    recent.add([entry(1, body=body)])

    (item,) = feed.tail()

    assert "message" not in item and item["bytes"] == len(body)
    assert item["preview"] == body[:20].decode("utf-8", "replace")


def test_without_history_in_memory_the_tail_reads_the_stream(make_engine, registry):
    engine = make_engine(recent_history_entries=0)
    feed = DashboardFeed(registry, engine)
    engine.hub.recent.restart(EPOCH, (0, 0))
    newest = [entry(1), entry(2)]
    engine.store.read_newest = lambda count, max_bytes: newest

    assert [item["message"]["data"]["n"] for item in feed.tail()] == [1, 2]


# -- the event stream ---------------------------------------------------------------------


def test_the_stream_greets_then_sends_figures_and_messages(feed, registry, monkeypatch):
    monkeypatch.setattr(dashboard_module, "TICK_SECONDS", 0)
    recent = registry.hub.recent
    recent.restart(EPOCH, (0, 0))
    recent.add([entry(1)])
    watched = []
    monkeypatch.setattr(registry, "watch", watched.append)
    stream = DashboardStream(feed, {"viewer": "ops"})

    chunks = [next(stream), next(stream)]
    stream.close()

    frames = parse_frames(chunks)
    assert [event for event, _ in frames] == ["hello", "figures", "messages"]
    assert frames[0][1] == {"viewer": "ops"}
    assert frames[2][1][0]["message"]["data"] == {"n": 1}
    assert chunks[0].startswith(b"retry: ")
    assert watched == [dashboard_module.WATCH_SECONDS]


def test_the_stream_ends_when_the_token_expires_or_the_worker_stops(feed, registry):
    expired = DashboardStream(feed, {}, expires_at=time.time() - 1)
    assert [event for event, _ in parse_frames(list(expired))] == ["hello", "closing"]

    registry.hub.close_all("shutdown")
    stopping = DashboardStream(feed, {})
    frames = parse_frames(list(stopping))
    assert frames[-1] == ("closing", {"reason": "shutdown",
                                      "retry_ms": dashboard_module.RETRY_MS})


def test_a_watch_makes_a_worker_publish_its_figures_every_second(registry, monkeypatch):
    published = []
    monkeypatch.setattr(registry, "publish_figures", lambda: published.append(time.time()))

    registry.handle({"op": "watch", "seconds": 5})
    assert registry._publish_while_watched() == 1.0
    registry.handle({"op": "watch", "seconds": "not a number"})  # ignored

    assert len(published) == 1
