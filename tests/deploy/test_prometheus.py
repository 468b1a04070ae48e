"""deploy/prometheus: the alert rules (promtool check and unit tests), which metrics they
use, and the scrape configurations."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy.deployfiles import (
    DOCS,
    PROMETHEUS,
    PROMETHEUS_SERIES,
    container,
    exported_series_names,
    find_object,
    load_yaml,
    metric_names,
)

ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts_test.yml"
# What the service's operators asked to be alerted on, by the alert that covers it.
EXPECTED_ALERTS = {
    "PushServiceDown",  # service down
    "PushServiceInstanceDown",
    "PushServiceReaderStuck",  # reader stuck
    "PushServiceRedisUnavailable",  # Redis unavailable
    "PushServicePublishErrorRatio",  # error ratio
    "PushServiceSlowDelivery",  # latency
    "PushServiceConnectionsNearLimit",  # connections near MAX_CONNECTIONS
}


def _rules() -> list[dict]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


@pytest.mark.needs_promtool
def test_alert_rules_pass_promtool_check(run_promtool):
    result = run_promtool("check", "rules", ALERTS.name, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


@pytest.mark.needs_promtool
def test_alert_rules_pass_their_unit_tests(run_promtool):
    result = run_promtool("test", "rules", ALERT_TESTS.name, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_cases_that_fire_and_cases_that_stay_silent():
    tests = load_yaml(ALERT_TESTS)
    assert tests["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert set(_alerts()) <= firing, f"never seen firing: {set(_alerts()) - firing}"
    assert set(_alerts()) <= silent, f"never seen silent: {set(_alerts()) - silent}"


def test_the_alerts_operators_asked_for_exist_with_severity_and_text():
    alerts = _alerts()
    assert EXPECTED_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        assert rule.get("for"), f"{name} fires on a single evaluation"


def test_alerts_use_only_metrics_the_service_exports():
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    known = exported_series_names() | PROMETHEUS_SERIES | recorded
    for rule in _rules():
        used = metric_names(rule["expr"])
        assert used or "alert" not in rule, rule
        assert used <= known, f"{rule.get('alert') or rule.get('record')}: {used - known}"


def test_alerts_select_the_scrape_job_of_the_scrape_configs():
    jobs = set()
    for rule in _rules():
        jobs.update(re.findall(r'job="([^"]+)"', rule["expr"]))
    assert jobs == {"pushservice"}
    for config in ("prometheus.yml", "prometheus-static.yml"):
        names = [job["job_name"] for job in load_yaml(PROMETHEUS / config)["scrape_configs"]]
        assert names == ["pushservice"], config


def test_connection_limit_rule_is_the_configured_max_connections():
    record = next(rule for rule in _rules() if rule.get("record") == "pushservice:max_connections")
    configured = find_object("ConfigMap", "pushservice-config")["data"]["MAX_CONNECTIONS"]
    assert record["expr"].strip() == f"vector({configured})"


def test_monitoring_doc_says_what_to_do_for_each_alert():
    text = DOCS[1].read_text(encoding="utf-8")
    for name in _alerts():
        assert re.search(rf"^#+ .*{name}", text, re.MULTILINE), f"no section for {name}"


@pytest.mark.needs_promtool
def test_static_scrape_config_passes_promtool(run_promtool):
    result = run_promtool("check", "config", "prometheus-static.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.needs_promtool
def test_kubernetes_scrape_config_passes_promtool(run_promtool, tmp_path: Path):
    # Debian's Prometheus is built without Kubernetes discovery: check everything else
    # (relabelling included) with the discovery swapped for static targets.
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["10.42.0.17:8089"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    result = run_promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def relabel(labels: dict[str, str], configs: list[dict]) -> dict[str, str] | None:
    """Prometheus's relabelling (replace, keep, drop) of one target; None when dropped."""
    labels = dict(labels)
    for config in configs:
        action = config.get("action", "replace")
        value = config.get("separator", ";").join(
            labels.get(name, "") for name in config.get("source_labels", []))
        match = re.fullmatch(config.get("regex", "(.*)"), value)
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            labels[config["target_label"]] = match.expand(
                config.get("replacement", "$1").replace("$", "\\"))
    return labels


def _pod_target(labels: dict[str, str], port_name: str) -> dict[str, str]:
    target = {"__meta_kubernetes_namespace": "pushservice",
              "__meta_kubernetes_pod_name": "pushservice-7d9f8b6c5d-x2x9q",
              "__meta_kubernetes_pod_node_name": "node-1",
              "__meta_kubernetes_pod_phase": "Running",
              "__meta_kubernetes_pod_container_port_name": port_name}
    for name, value in labels.items():
        target["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name)] = value
    return target


def test_kubernetes_scrape_config_keeps_the_service_pods_with_namespace_and_pod():
    job = load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"][0]
    deployment = find_object("Deployment", "pushservice")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port = container(deployment)["ports"][0]["name"]

    kept = relabel(_pod_target(pod_labels, port), job["relabel_configs"])
    assert kept is not None
    # What the Prometheus adapter's rule needs to tie a series to its pod.
    assert kept["namespace"] == "pushservice"
    assert kept["pod"] == "pushservice-7d9f8b6c5d-x2x9q"

    redis = find_object("StatefulSet", "redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert relabel(_pod_target(redis_labels, "redis"), job["relabel_configs"]) is None
    pending = _pod_target(pod_labels, port) | {"__meta_kubernetes_pod_phase": "Pending"}
    assert relabel(pending, job["relabel_configs"]) is None
    # The annotations other set-ups scrape by point at the same port and path.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(container(deployment)["ports"][0]
                                                    ["containerPort"])
    assert annotations["prometheus.io/path"] == job["metrics_path"]


def test_scrape_configs_load_the_alert_rules():
    for config in ("prometheus.yml", "prometheus-static.yml"):
        assert load_yaml(PROMETHEUS / config)["rule_files"] == [ALERTS.name]
