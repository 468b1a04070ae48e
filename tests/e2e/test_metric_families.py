"""Every metric family the docs/operations.md and docs/monitoring.md document is in the first scrape of
a fresh instance, and every known label value of the labelled counters with it (at 0), so
that dashboards and alerts see 0 rather than "no data"."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pushservice.ops.metrics import (
    HISTORY_LOST_REASONS,
    PUBLISH_FAILURE_REASONS,
    SEND_ENDPOINTS,
    STREAM_REFUSAL_REASONS,
)
from tests.deploy.deployfiles import exported_metrics

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring.md"


def _documented() -> set[str]:
    """Series names the Metrics table of docs/operations.md and docs/monitoring.md name."""
    names = set(exported_metrics())
    for name in re.findall(r"message_push_[a-z_]+", MONITORING.read_text(encoding="utf-8")):
        names.add(re.sub(r"_(bucket|sum|count)$", "", name))
    return names


def test_a_fresh_instance_shows_every_documented_family_and_label_value(service):
    instance = service(WORKERS="2")
    response = instance.get("/metrics")
    assert response.status_code == 200

    series: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            series.setdefault(sample.name, {})[labels] = sample.value
    documented = _documented()
    # Counters are documented with their _total suffix, histograms by their family name.
    present = set(series) | {name.removesuffix("_count") for name in series}
    assert documented - present == set(), "documented but missing from a fresh scrape"

    def values(name: str, label: str) -> dict[str, float]:
        return {dict(labels)[label]: value for labels, value in series[name].items()}

    assert values("message_push_messages_sent_total", "endpoint") == dict.fromkeys(
        SEND_ENDPOINTS, 0.0)
    assert values("message_push_messages_failed_total", "reason") == dict.fromkeys(
        PUBLISH_FAILURE_REASONS, 0.0)
    assert set(values("message_push_stream_refusals_total", "reason")) == set(
        STREAM_REFUSAL_REASONS)
    assert values("message_push_history_lost_total", "reason") == dict.fromkeys(
        HISTORY_LOST_REASONS, 0.0)
