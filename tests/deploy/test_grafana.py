"""deploy/grafana/pushservice.json: a dashboard Grafana can import, whose every query
parses and selects only metrics the service exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.deploy.deployfiles import (
    DASHBOARD,
    PROMETHEUS_SERIES,
    exported_metrics,
    exported_series_names,
    metric_names,
)

# Families the dashboard must show: connections, publishes and failures by code, delivery
# and its latency, the stream, the readers, HTTP.
WATCHED = (
    "message_push_connections_total",
    "message_push_messages_sent_total",
    "message_push_messages_failed_total",
    "message_push_message_duration_seconds",
    "message_push_frames_delivered_total",
    "message_push_slow_consumer_disconnects_total",
    "message_push_history_lost_total",
    "message_push_stream_length",
    "message_push_reader_lag_seconds",
    "message_push_reader_up",
    "message_push_reader_errors_total",
    "message_push_http_request_duration_seconds",
    "message_push_http_request_total",
)
# Values Grafana puts in for its variables when it runs a query.
VARIABLE_VALUES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "job": "pushservice",
    "instance": ".*",
    "max_connections": "10000",
}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels() -> Iterator[dict]:
    for panel in _dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in _panels():
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            # label_values(<selector>, label): the selector is PromQL.
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query).group(1)
            yield f"variable {variable['name']}", selector


def substitute(expr: str) -> str:
    """The query as Grafana sends it, with the defaults of its variables."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in VARIABLE_VALUES, f"unknown variable ${name} in {expr}"
        return VARIABLE_VALUES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


QUERIES = list(_queries())


def test_dashboard_is_json_grafana_imports_with_a_datasource_variable():
    dashboard = _dashboard()
    assert dashboard["uid"] == "pushservice"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # Defined variables are the ones the queries use (Grafana's own start with __).
    used = {name for _, expr in QUERIES
            for name in re.findall(r"\$\{?(\w+)", expr) if not name.startswith("__")}
    assert used <= set(variables)
    assert set(variables) - {"datasource"} <= used


def test_every_panel_queries_the_datasource_variable():
    for panel in _panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}"


def test_panels_have_unique_ids_and_do_not_overlap():
    panels = list(_panels())
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
    refs = [(panel["id"], target["refId"]) for panel in panels
            for target in panel.get("targets", [])]
    assert len(refs) == len(set(refs))


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[where for where, _ in QUERIES])
def test_query_parses_and_uses_only_exported_metrics(where, expr):
    try:
        used = metric_names(substitute(expr))
    except ValueError as exc:
        pytest.fail(f"{where}: {exc}\n{expr}", pytrace=False)
    # Only a constant line (a limit) selects no metric.
    assert used or substitute(expr).startswith("vector("), where
    unknown = used - exported_series_names() - PROMETHEUS_SERIES
    assert not unknown, f"{where}: not exported by the service: {sorted(unknown)}"


@pytest.mark.needs_promtool
def test_queries_pass_prometheus_own_parser(run_promtool, tmp_path: Path):
    # promtool checks recording rules with Prometheus's parser: one rule per query.
    rules = [{"record": f"dashboard:query_{index}", "expr": substitute(expr)}
             for index, (_, expr) in enumerate(QUERIES)]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}),
                    encoding="utf-8")
    result = run_promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_the_metric_families_operators_watch():
    used = set()
    for _, expr in QUERIES:
        used |= metric_names(substitute(expr))
    for family in WATCHED:
        kind = exported_metrics()[family]
        series = {f"{family}_bucket", f"{family}_sum", f"{family}_count"} if kind == "histogram" \
            else {family}
        assert series & used, f"no panel shows {family}"


def test_dashboard_has_the_panels_operators_asked_for():
    titles = {panel["title"] for panel in _panels()}
    exprs = {panel["title"]: " ".join(target["expr"] for target in panel.get("targets", []))
             for panel in _panels()}
    for title in ("Open connections", "Open connections per instance", "Publish rate",
                  "Delivery rate per instance", "Message success rate", "Delivery latency",
                  "Stream length", "Reader lag per instance", "Readers up per instance",
                  "Publish errors by code", "HTTP latency p99 by endpoint"):
        assert title in titles
    assert "sum by (reason)" in exprs["Publish errors by code"]
    assert "histogram_quantile(0.5," in exprs["Delivery latency"]
    assert "histogram_quantile(0.99," in exprs["Delivery latency"]
    assert "sum by (endpoint, le)" in exprs["HTTP latency p99 by endpoint"]
    per_instance = [title for title, expr in exprs.items() if "by (instance" in expr]
    assert len(per_instance) >= 4
