"""deploy/kubernetes: the manifests against the Kubernetes schemas, and what they must
say to run the service well (probes, shutdown, security, settings, autoscaling)."""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from pushservice.errors import SettingsError
from tests.deploy.deployfiles import (
    KUBERNETES,
    NAMESPACE,
    PLATFORM_VARIABLES,
    ROOT,
    TEST_SECRET,
    container,
    dockerfile_instructions,
    exported_metrics,
    find_object,
    kubernetes_files,
    kubernetes_objects,
    load_yaml,
    relative,
    setting_names,
    settings_from,
    yaml_documents,
)
from tests.support.ports import free_port

# The oldest Kubernetes the manifests are written for (PodDisruptionBudget's
# unhealthyPodEvictionPolicy is 1.27+), and the newest schemas the package ships.
KUBERNETES_VERSIONS = ("1.27", kubernetes_validate.latest_version())
# Objects of kinds that are not Kubernetes' own: no schema ships for them.
CUSTOM_KINDS = {
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
# Where the Prometheus adapter runs (its rule is a ConfigMap there).
ADAPTER_NAMESPACE = "monitoring"


def _schema_cases() -> Iterator[tuple[str, int, dict]]:
    for path in kubernetes_files():
        for index, doc in enumerate(yaml_documents(path)):
            if (isinstance(doc, dict) and "kind" in doc
                    and (doc["apiVersion"], doc["kind"]) not in CUSTOM_KINDS):
                yield relative(path), index, doc


SCHEMA_CASES = list(_schema_cases())


def _deployment() -> dict:
    return find_object("Deployment", "pushservice")


def _configmap() -> dict[str, str]:
    return find_object("ConfigMap", "pushservice-config")["data"]


def _pod_environment(secret: str = TEST_SECRET) -> dict[str, str]:
    """The environment a pod of the Deployment gets: the ConfigMap, the Secret (with
    ``secret`` as JWT_SECRET) and the container's own variables, with what the downward
    API fills in replaced by values a pod could have."""
    environment = dict(_configmap())
    environment["JWT_SECRET"] = secret
    downward = {"metadata.name": "pushservice-7d9f8b6c5d-x2x9q", "status.podIP": "10.42.0.17"}
    for variable in container(_deployment()).get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        else:
            environment[variable["name"]] = downward[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return environment


def test_every_file_under_deploy_parses_as_yaml():
    files = sorted((ROOT / "deploy").rglob("*.yml")) + sorted((ROOT / "deploy").rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        assert yaml_documents(path), f"{relative(path)} holds no YAML document"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(("path", "index", "manifest"), SCHEMA_CASES,
                         ids=[f"{path}#{index}" for path, index, _ in SCHEMA_CASES])
def test_manifest_matches_the_kubernetes_schema(path, index, manifest, version):
    # strict: unknown fields (a misspelt key) are errors, not silently dropped.
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        location = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{path}: {manifest['kind']} {location}: {exc.message}", pytrace=False)


def test_every_kubernetes_object_is_checked_against_a_schema_or_known_as_custom():
    kinds = {(obj["apiVersion"], obj["kind"]) for _, obj in kubernetes_objects()}
    checked = {(doc["apiVersion"], doc["kind"]) for _, _, doc in SCHEMA_CASES}
    assert kinds - checked <= CUSTOM_KINDS
    assert {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "StatefulSet", "Namespace"} <= {
        kind for _, kind in checked}


def test_the_schema_check_catches_a_misspelt_field_and_a_wrong_type():
    deployment = yaml.safe_load(yaml.safe_dump(_deployment()))
    deployment["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    deployment = yaml.safe_load(yaml.safe_dump(_deployment()))
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "thirty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_applies_every_manifest_but_the_secret():
    kustomization = load_yaml(KUBERNETES / "kustomization.yaml")
    listed = set(kustomization["resources"])
    for name in listed:
        assert (KUBERNETES / name).is_file(), f"kustomization.yaml lists missing {name}"
    top_level = {path.name for path in KUBERNETES.glob("*.yaml")}
    # Re-applying must never put the placeholder back over a real JWT_SECRET.
    assert listed == top_level - {"kustomization.yaml", "secret.yaml"}
    assert kustomization["namespace"] == NAMESPACE


def test_every_object_names_its_namespace():
    for path, obj in kubernetes_objects():
        if obj["kind"] in ("Namespace", "Kustomization"):
            continue
        expected = ADAPTER_NAMESPACE if path.parent.name == "prometheus-adapter" else NAMESPACE
        assert obj["metadata"].get("namespace") == expected, (
            f"{relative(path)}: {obj['kind']} {obj['metadata']['name']}")


def test_selectors_reach_the_pods_and_ports_they_name():
    deployment = _deployment()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    ports = {port["name"]: port["containerPort"] for port in container(deployment)["ports"]}
    assert ports == {"http": 8089}

    service = find_object("Service", "pushservice")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ports
    pdb = find_object("PodDisruptionBudget", "pushservice")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = find_object("HorizontalPodAutoscaler", "pushservice")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "pushservice"}
    for constraint in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()

    # The Service must not also select the Redis pods, nor Redis's select these.
    redis = find_object("StatefulSet", "redis")
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= redis_labels.items()
    redis_service = find_object("Service", "redis")
    assert redis_service["spec"]["selector"].items() <= redis_labels.items()
    assert not redis_service["spec"]["selector"].items() <= pod_labels.items()
    assert redis["spec"]["serviceName"] == "redis"


def test_readiness_is_health_and_liveness_survives_a_redis_outage():
    spec = container(_deployment())
    readiness = spec["readinessProbe"]
    assert readiness["httpGet"]["path"] == "/health"
    assert readiness["httpGet"]["port"] in ("http", 8089)
    # An httpGet liveness probe on /health would restart every pod while Redis is away
    # (503): liveness asks only that the process answers HTTP at all.
    liveness = spec["livenessProbe"]
    assert "httpGet" not in liveness
    assert liveness["exec"]["command"] == spec["startupProbe"]["exec"]["command"]
    # Up to a minute without any answer before a restart.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    assert liveness["timeoutSeconds"] > readiness["timeoutSeconds"]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _run_probe(command: list[str], port: int) -> int:
    # The probe runs with the image's python; any Python 3 behaves the same.
    argv = ["python3" if command[0] == "python" else command[0], *command[1:]]
    environment = dict(os.environ, SERVICE_PORT=str(port))
    return subprocess.run(argv, env=environment, capture_output=True, timeout=15,
                          check=False).returncode


@pytest.mark.parametrize("status", [200, 503])
def test_liveness_probe_passes_while_the_service_answers(status):
    command = container(_deployment())["livenessProbe"]["exec"]["command"]
    handler = type("Health", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _run_probe(command, server.server_address[1]) == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_liveness_probe_fails_when_nothing_answers():
    command = container(_deployment())["livenessProbe"]["exec"]["command"]
    assert _run_probe(command, free_port()) != 0


def test_termination_grace_covers_prestop_and_the_stream_drain():
    pod = _deployment()["spec"]["template"]["spec"]
    pre_stop = container(_deployment())["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    sleep_seconds = float(pre_stop[1])
    readiness = container(_deployment())["readinessProbe"]
    # Long enough for the endpoint to leave the Service (and a readiness period).
    assert sleep_seconds >= readiness["periodSeconds"]
    grace = float(_configmap()["SHUTDOWN_GRACE_SECONDS"])
    spread = 2.0  # closing frames are spread over up to 2 s (gunicorn.conf.py)
    assert pod["terminationGracePeriodSeconds"] >= sleep_seconds + spread + grace + 5


def test_pod_runs_as_the_image_user_with_a_read_only_root():
    user = dict(dockerfile_instructions())["USER"]
    uid, gid = (int(part) for part in user.split(":"))
    pod = _deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        uid, gid)
    spec = container(_deployment())
    security = spec["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]

    # What gunicorn.conf.py and the workers write goes to a mounted emptyDir.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in spec["volumeMounts"]}
    environment = _pod_environment()
    for variable in ("TMPDIR", "PROMETHEUS_MULTIPROC_DIR"):
        folder = Path(environment[variable])
        mounted = [path for path in mounts if folder == Path(path) or Path(path) in folder.parents]
        assert mounted, f"{variable}={folder} is not on a mounted volume"
        assert "emptyDir" in volumes[mounts[mounted[0]]]
    # gunicorn.conf.py empties PROMETHEUS_MULTIPROC_DIR at start (rmtree): a folder
    # inside the volume, not the mount point itself.
    assert environment["PROMETHEUS_MULTIPROC_DIR"] not in mounts


def test_every_container_has_requests_and_limits():
    for path, obj in kubernetes_objects():
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for spec in obj["spec"]["template"]["spec"]["containers"]:
            resources = spec["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), relative(path)
            assert "memory" in resources["limits"], relative(path)


def test_the_service_accepts_the_settings_a_pod_gets():
    environment = _pod_environment()
    unknown = set(environment) - setting_names() - PLATFORM_VARIABLES
    assert not unknown, f"variables the service does not read: {sorted(unknown)}"
    settings = settings_from(environment)
    assert settings.workers == int(environment["WORKERS"])
    assert settings.max_connections == int(environment["MAX_CONNECTIONS"])
    assert settings.shutdown_grace_seconds == float(environment["SHUTDOWN_GRACE_SECONDS"])
    assert settings.instance_name == "pushservice-7d9f8b6c5d-x2x9q"
    assert settings.enable_auth is True


def test_the_secret_placeholder_stops_the_service_with_a_clear_message():
    secret = find_object("Secret", "pushservice-secrets")
    placeholder = secret["stringData"]["JWT_SECRET"]
    with pytest.raises(SettingsError) as refused:
        settings_from(_pod_environment(secret=placeholder))
    assert "JWT_SECRET" in str(refused.value)
    assert "example value" in str(refused.value)
    # The Deployment reads that Secret.
    sources = container(_deployment())["envFrom"]
    assert {"secretRef": {"name": "pushservice-secrets"}} in sources


def test_no_service_link_variables_reach_the_service():
    # With service links, a Service named "redis" injects REDIS_PORT=tcp://ip:6379 into
    # every pod of the namespace, which the service refuses as its REDIS_PORT setting.
    assert _deployment()["spec"]["template"]["spec"]["enableServiceLinks"] is False
    with pytest.raises(SettingsError, match="REDIS_PORT"):
        settings_from({"REDIS_HOST": "redis", "REDIS_PORT": "tcp://10.43.0.12:6379",
                       "JWT_SECRET": TEST_SECRET})


def test_redis_url_names_the_redis_service():
    url = urlsplit(_configmap()["REDIS_URL"])
    redis_service = find_object("Service", "redis")
    assert url.hostname == redis_service["metadata"]["name"]
    assert url.port == redis_service["spec"]["ports"][0]["port"]


def test_redis_keeps_its_data_with_aof_on_a_volume():
    redis = find_object("StatefulSet", "redis")
    spec = container(redis)
    assert spec["image"].startswith("redis:7")
    args = spec["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    claims = {claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in spec["volumeMounts"]}
    assert mounts[data_dir] in claims
    # A full Redis refuses writes; it never evicts the stream.
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"


def _adapter_rules() -> list[tuple[str, list[dict]]]:
    config = find_object("ConfigMap", "prometheus-adapter", ADAPTER_NAMESPACE)
    values = load_yaml(KUBERNETES / "prometheus-adapter" / "values.yaml")
    return [("adapter-config.yaml", yaml.safe_load(config["data"]["config.yaml"])["rules"]),
            ("values.yaml", values["rules"]["custom"])]


def test_autoscaler_scales_on_connections_per_pod_with_cpu_as_fallback():
    hpa = find_object("HorizontalPodAutoscaler", "pushservice")
    metrics = {metric["type"]: metric for metric in hpa["spec"]["metrics"]}
    assert set(metrics) == {"Pods", "Resource"}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    pods = metrics["Pods"]["pods"]
    # Well below MAX_CONNECTIONS: new pods take new connections only.
    target = float(pods["target"]["averageValue"])
    assert 0 < target <= 0.6 * int(_configmap()["MAX_CONNECTIONS"])
    assert hpa["spec"]["minReplicas"] >= 2
    behavior = hpa["spec"]["behavior"]
    assert (behavior["scaleDown"]["stabilizationWindowSeconds"]
            > behavior["scaleUp"]["stabilizationWindowSeconds"])

    # The adapter serves that metric from the service's gauge, without a rate.
    for source, rules in _adapter_rules():
        served = [rule for rule in rules if rule["name"]["as"] == pods["metric"]["name"]]
        assert len(served) == 1, source
        rule = served[0]
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
        assert exported_metrics()[series] == "gauge"
        assert re.fullmatch(rule["name"]["matches"], series)
        assert "rate(" not in rule["metricsQuery"]
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert _adapter_rules()[0][1] == _adapter_rules()[1][1]


def test_pod_monitor_selects_the_pods_on_their_http_port():
    monitor = yaml_documents(KUBERNETES / "optional" / "podmonitor.yaml")[0]
    pod_labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    job = [label for label in endpoint["relabelings"] if label["targetLabel"] == "job"]
    assert job[0]["replacement"] == "pushservice"


def test_ingress_routes_client_paths_only():
    ingress = yaml_documents(KUBERNETES / "optional" / "ingress.yaml")[0]
    paths = [path["path"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert "/sse/" in paths and "/api/" in paths
    assert not {"/", "/metrics", "/health", "/admin/"} & set(paths)
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    heartbeat = float(_configmap()["HEARTBEAT_INTERVAL"])
    assert float(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > 2 * heartbeat
