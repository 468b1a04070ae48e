"""What the deployment tests read: the files under deploy/, the compose files, the
Dockerfile, and the two contracts they are checked against, the metric names docs/operations.md
documents and the environment variables the service reads."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
COMPOSE = DEPLOY / "compose"
DASHBOARD = DEPLOY / "grafana" / "pushservice.json"
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "operations.md"
DOCS = (ROOT / "docs" / "deployment.md", ROOT / "docs" / "monitoring.md")
COMPOSE_FILES = (ROOT / "docker-compose.yml", COMPOSE / "failover.yml", COMPOSE / "original.yml")
NAMESPACE = "pushservice"
# Variables a container may carry that are not the service's settings: the standard
# library's temporary folder.
PLATFORM_VARIABLES = frozenset({"TMPDIR"})
# Series Prometheus records itself for every target.
PROMETHEUS_SERIES = frozenset({"up"})
# A secret the service accepts (only ever used in these tests).
TEST_SECRET = "b8f1c0e4d2a97e3f6c5b1a0d9e8f7c6b5a4d3c2b1e0f9a8d7c6b5a4e3d2c1b0a"


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def yaml_documents(path: Path) -> list[Any]:
    """Every non-empty document of a YAML file."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def kubernetes_files() -> list[Path]:
    return sorted(KUBERNETES.rglob("*.yaml"))


def kubernetes_objects() -> Iterator[tuple[Path, dict]]:
    """(file, object) for every Kubernetes object under deploy/kubernetes (the adapter's
    Helm values are not an object and are left out)."""
    for path in kubernetes_files():
        for doc in yaml_documents(path):
            if isinstance(doc, dict) and "kind" in doc:
                yield path, doc


def find_object(kind: str, name: str, namespace: str = NAMESPACE) -> dict:
    for _, obj in kubernetes_objects():
        meta = obj.get("metadata", {})
        if obj["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return obj
    raise AssertionError(f"no {kind} {namespace}/{name} under {relative(KUBERNETES)}")


def container(workload: dict, name: str | None = None) -> dict:
    containers = workload["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


@cache
def exported_metrics() -> dict[str, str]:
    """Metric families docs/operations.md's Metrics table documents, as exposed: name -> type.

    Counters are listed with their ``_total`` suffix, as Prometheus sees them. A row may
    hold two names, the second abbreviated (``message_push_connections_opened_total``,
    ``..._closed_total``).
    """
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    families: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        kind = cells[1]
        previous = None
        for name in re.findall(r"`([^`]+)`", cells[0]):
            name = name.split("{", 1)[0]
            if name.startswith("..."):
                suffix = name[3:]
                stem = previous.rsplit("_", suffix.count("_"))[0]
                name = stem + suffix
            families[name] = kind
            previous = name
    assert families, "the Metrics table of docs/operations.md was not found"
    return families


@cache
def exported_series_names() -> frozenset[str]:
    """Every series name a scrape of /metrics can hold, histograms' included."""
    names = set()
    for name, kind in exported_metrics().items():
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}_{part}" for part in ("bucket", "sum", "count"))
    return frozenset(names)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (``{__name__="..."}`` included)."""
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return names


class _Recorder(dict):
    """An empty environment that remembers every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)


@cache
def setting_names() -> frozenset[str]:
    """The environment variables the service reads (Settings.from_env), found by letting
    it read an empty environment and noting what it asks for."""
    from pushservice.errors import SettingsError
    from pushservice.settings import Settings

    recorder = _Recorder()
    try:
        Settings.from_env(recorder)
    except SettingsError:
        pass  # no JWT_SECRET: every variable was read before that is reported
    # With REDIS_URL unset the REDIS_HOST/PORT/DB/PASSWORD family is read as well.
    assert {"REDIS_URL", "REDIS_HOST", "SERVICE_PORT", "JWT_SECRET"} <= recorder.asked
    return frozenset(recorder.asked)


def settings_from(environment: Mapping[str, str]):
    """Settings.from_env of ``environment`` alone (raises SettingsError)."""
    from pushservice.settings import Settings

    return Settings.from_env(dict(environment))


_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, environment: Mapping[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` substitution."""
    def replace(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        found = environment.get(name)
        if found:
            return found
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise KeyError(f"{name}: {arg}")
        return ""

    return _INTERPOLATION.sub(replace, value)


def required_variables(value: str) -> set[str]:
    """Names a compose value requires with ``${NAME:?...}``."""
    return {m["name"] for m in _INTERPOLATION.finditer(value) if m["op"] in (":?", "?")}


def compose_environment(service: dict) -> dict[str, str]:
    """A compose service's environment as a mapping (list or mapping form)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in environment)
        return {name: value for name, value in pairs}
    return {name: "" if value is None else str(value) for name, value in environment.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    joined: list[str] = []
    current = ""
    for line in lines:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        joined.append(current.strip())
        current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1]) for item in joined]
