"""Prometheus metrics: the flusher copies a worker's counters (as deltas) and figures into
the metric families, and /metrics serves them to whom it may."""

from __future__ import annotations

import json

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


# -- every family and every known label value from the first scrape ----------------------

SECRET = "unit-metrics-0123456789abcdef0123456789abcdef"


def test_labelled_counters_start_at_zero_for_every_known_value(parts):
    metrics, _ = parts

    for endpoint in metrics_module.SEND_ENDPOINTS:
        assert value(metrics, "message_push_messages_sent_total", endpoint=endpoint) == 0
    for reason in metrics_module.PUBLISH_FAILURE_REASONS:
        assert value(metrics, "message_push_messages_failed_total", reason=reason) == 0
    for reason in metrics_module.STREAM_REFUSAL_REASONS:
        assert value(metrics, "message_push_stream_refusals_total", reason=reason) == 0
    for reason in metrics_module.HISTORY_LOST_REASONS:
        assert value(metrics, "message_push_history_lost_total", reason=reason) == 0


def test_a_publish_that_counts_still_adds_to_its_series(parts):
    metrics, _ = parts
    metrics.count_sent("batch", 3)

    assert value(metrics, "message_push_messages_sent_total", endpoint="batch") == 3
    assert value(metrics, "message_push_messages_sent_total", endpoint="send") == 0


def test_refused_publishes_count_under_reasons_that_were_there_from_the_start(fake_clients):
    """Each way a publish can be refused adds to a series the first scrape showed."""
    from pushservice.auth import build_claims, mint_token

    settings = Settings(jwt_secret=SECRET, max_request_bytes=4096, max_message_bytes=1024,
                        max_batch_size=2, publish_rate_per_service=1,
                        publish_burst_per_service=2)
    app = create_app(settings)
    client = app.test_client()

    def token(**claims) -> dict:
        subject = claims.pop("subject", "svc")
        ttl = claims.pop("ttl_seconds", 60)
        raw = mint_token(build_claims(subject, ttl_seconds=ttl, **claims), SECRET)
        return {"Authorization": f"Bearer {raw}"}

    publisher = token(service="svc", publish=["user:*"])
    good = {"type": "info", "service": "svc", "target": {"user_id": "u1"}, "data": {}}
    send, batch = "/api/v1/messages/send", "/api/v1/messages/batch"
    attempts = [
        (send, {}, good),                                              # missing_token
        (send, {"Authorization": "Bearer nope"}, good),               # invalid_token
        (send, token(service="svc", ttl_seconds=-60), good),          # token_expired
        (send, token(), good),                                        # publish_forbidden
        (send, token(service="other", publish=["*"]), good),          # service_mismatch
        (send, publisher, {**good, "target": {"kb_id": "k"}}),        # topic_forbidden
        ("/api/v1/messages/broadcast", publisher, good),              # broadcast_forbidden
        (send, publisher, b"{not json"),                               # invalid_json
        (send, publisher, {**good, "type": "bogus"}),                 # validation_failed
        (send, publisher, {**good, "data": {"x": "y" * 2000}}),       # message_too_large
        (send, publisher, {**good, "data": {"x": "y" * 5000}}),       # payload_too_large
        (batch, publisher, {"messages": [good] * 3}),                 # batch_too_large
    ] + [(send, publisher, good)] * 4                                  # rate_limited
    for url, headers, body in attempts:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        client.post(url, data=data, headers=headers, content_type="application/json")
    client.post(send, data=b"{}", headers=publisher, content_type="text/plain")

    metrics = app.extensions["pushservice"].metrics
    counted = {sample.labels["reason"]: sample.value
               for family in metrics.registry.collect()
               if family.name == "message_push_messages_failed"
               for sample in family.samples if sample.name.endswith("_total")}
    refused = {reason for reason, number in counted.items() if number}
    assert set(counted) == set(metrics_module.PUBLISH_FAILURE_REASONS), "no new series"
    assert refused >= {"missing_token", "invalid_token", "token_expired", "publish_forbidden",
                       "service_mismatch", "topic_forbidden", "broadcast_forbidden",
                       "invalid_json", "validation_failed", "message_too_large",
                       "payload_too_large", "batch_too_large", "rate_limited",
                       "unsupported_media_type"}, refused


def test_history_lost_reasons_are_the_ones_event_streams_send():
    """A new reason in event_stream.py needs its place in HISTORY_LOST_REASONS."""
    import re
    from pathlib import Path

    from pushservice.engine import event_stream

    source = Path(event_stream.__file__).read_text(encoding="utf-8")
    sent = set(re.findall(r'_lost\("([a-z_]+)"', source))
    assert sent and sent <= set(metrics_module.HISTORY_LOST_REASONS)


def test_every_error_code_on_the_publish_path_is_a_known_reason():
    """A new error code where publishes are checked needs its place in
    PUBLISH_FAILURE_REASONS, so that its series exists from the first scrape."""
    import re
    from pathlib import Path

    package = Path(metrics_module.__file__).resolve().parents[1]
    not_publishing = {"admin_required"}  # auth.py's code for the admin APIs
    codes = set()
    for name in ("web/publish.py", "web/body.py", "message.py", "auth.py",
                 "store/messages.py"):
        path = package / name
        if path.exists():
            codes |= set(re.findall(r'code(?:=|": )"([a-z_]+)"', path.read_text("utf-8")))
    assert "rate_limited" in codes
    assert codes - not_publishing <= set(metrics_module.PUBLISH_FAILURE_REASONS)
