"""Prometheus metrics: the flusher copies a worker's counters (as deltas) and figures into
the metric families, and /metrics serves them to whom it may."""

from __future__ import annotations

import pytest

from pushservice import create_app
from pushservice.engine.subscription import Subscription
from pushservice.ops import metrics as metrics_module
from pushservice.ops.metrics import PushMetrics
from pushservice.settings import Settings


@pytest.fixture
def parts(make_engine, settings):
    return PushMetrics(settings), make_engine()


def value(metrics: PushMetrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def test_counters_are_copied_as_deltas(parts):
    metrics, engine = parts
    stats = engine.stats
    stats.delivered = 5
    stats.slow_consumers = 1
    metrics.flush(engine)
    stats.delivered = 8
    metrics.flush(engine)
    metrics.flush(engine)  # nothing new

    assert value(metrics, "message_push_frames_delivered_total") == 8
    assert value(metrics, "message_push_slow_consumer_disconnects_total") == 1


def test_history_lost_is_counted_by_reason(parts):
    metrics, engine = parts
    stats = engine.stats
    stats.note_history_lost("history_trimmed")
    stats.note_history_lost("history_trimmed")
    stats.note_history_lost("stream_reset")

    metrics.flush(engine)

    assert value(metrics, "message_push_history_lost_total", reason="history_trimmed") == 2
    assert value(metrics, "message_push_history_lost_total", reason="stream_reset") == 1


def test_latencies_are_observed_and_sampled_when_many(parts, monkeypatch):
    metrics, engine = parts
    stats = engine.stats
    monkeypatch.setattr(metrics_module, "MAX_OBSERVATIONS_PER_FLUSH", 10)
    for _ in range(100):
        stats.observe_latency(0.003)

    metrics.flush(engine)

    assert value(metrics, "message_push_message_duration_seconds_count") == 10
    assert value(metrics, "message_push_message_duration_seconds_bucket", le="0.005") == 10
    assert stats.drain_latencies() == []  # drained


def test_gauges_show_connections_lag_reader_and_stream_length(parts):
    metrics, engine = parts
    hub, reader = engine.hub, engine.reader
    hub.register(Subscription(("news",), 10))
    reader.lag_seconds = 0.25

    metrics.flush(engine, stream_length=42)

    assert value(metrics, "message_push_connections_total") == 1
    assert value(metrics, "message_push_reader_lag_seconds") == 0.25
    assert value(metrics, "message_push_reader_up") == 0  # never started
    assert value(metrics, "message_push_stream_length") == 42


def test_the_endpoint_serves_prometheus_text(fake_clients):
    client = create_app(Settings(enable_auth=False)).test_client()
    client.get("/health")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert "message_push_connections_total" in text
    assert 'message_push_http_request_duration_seconds_count{endpoint="health.health",' in text


def test_metrics_can_be_limited_to_networks(fake_clients):
    settings = Settings(enable_auth=False, metrics_allowed_networks=("10.0.0.0/8",))
    client = create_app(settings).test_client()

    refused = client.get("/metrics", environ_base={"REMOTE_ADDR": "192.168.1.5"})
    allowed = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})

    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "metrics_forbidden"
    assert allowed.status_code == 200


def test_invented_http_methods_share_one_label(fake_clients):
    client = create_app(Settings(enable_auth=False)).test_client()
    for method in ("BREW", "PROPFIND", "X" * 200):
        client.open("/health", method=method)
    client.get("/health")

    text = client.get("/metrics").get_data(as_text=True)

    assert 'message_push_http_request_total{method="other",status="405"} 3.0' in text
    assert 'method="GET"' in text
    assert "BREW" not in text and "PROPFIND" not in text and "XXXX" not in text


def test_unrouted_paths_share_one_endpoint_label(fake_clients):
    client = create_app(Settings(enable_auth=False)).test_client()
    for path in ("/a", "/b/c", "/%ff"):
        client.get(path)

    text = client.get("/metrics").get_data(as_text=True)

    assert ('message_push_http_request_duration_seconds_count{endpoint="none",method="GET",'
            'status="404"} 3.0') in text


def test_streams_over_a_users_limit_count_as_refusals(parts):
    metrics, engine = parts
    engine.stats.user_limit_refusals += 2

    metrics.flush(engine)

    assert value(metrics, "message_push_stream_refusals_total",
                 reason="too_many_user_connections") == 2
