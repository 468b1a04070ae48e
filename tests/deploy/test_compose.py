"""The compose files (docker-compose.yml, deploy/compose/): checked by their structure and
by the service's own settings parser, since no Docker engine runs here."""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import pytest

from pushservice.errors import SettingsError
from tests.deploy.deployfiles import (
    COMPOSE,
    COMPOSE_FILES,
    ROOT,
    TEST_SECRET,
    compose_environment,
    interpolate,
    load_yaml,
    relative,
    required_variables,
    setting_names,
    settings_from,
)

# The original description's compose file, as it gives it (SPEC.md, Deployment).
ORIGINAL = {
    "message-push-service": {
        "build": "./message-push-service",
        "ports": ["8089:8089"],
        "environment": ["REDIS_HOST=redis", "SERVICE_PORT=8089"],
        "depends_on": ["redis"],
        "restart": "unless-stopped",
    },
}
# What a user sets in their shell to run any of the compose files.
USER_ENVIRONMENT = {"JWT_SECRET": TEST_SECRET}


def _compose(path: Path) -> dict:
    return load_yaml(path)


def _service_containers(path: Path) -> dict[str, dict]:
    """The services of a compose file that run this repository's image."""
    return {name: service for name, service in _compose(path)["services"].items()
            if "build" in service}


def _shutdown_grace(environment: dict[str, str]) -> float:
    return float(environment.get("SHUTDOWN_GRACE_SECONDS", 10))


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(number) * units[unit]
               for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=[p.name for p in COMPOSE_FILES])
def test_compose_file_builds_the_repository_image(path):
    services = _service_containers(path)
    assert services, f"{relative(path)} runs no pushservice"
    for name, service in services.items():
        context = (path.parent / service["build"]).resolve()
        assert context == ROOT, f"{name} builds {context}"
        assert (context / "Dockerfile").is_file()
        assert service["restart"] == "unless-stopped"
    for name, service in _compose(path)["services"].items():
        assert service.get("restart") == "unless-stopped", f"{relative(path)}: {name}"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=[p.name for p in COMPOSE_FILES])
def test_the_service_accepts_the_compose_environment(path):
    for name, service in _service_containers(path).items():
        environment = compose_environment(service)
        unknown = set(environment) - setting_names()
        assert not unknown, f"{relative(path)}: {name}: not settings: {sorted(unknown)}"
        # The only thing a user must bring is the secret.
        needed = set().union(*(required_variables(value) for value in environment.values()))
        assert needed == {"JWT_SECRET"}, f"{relative(path)}: {name}"
        resolved = {key: interpolate(value, USER_ENVIRONMENT)
                    for key, value in environment.items()}
        settings = settings_from(resolved)
        assert settings.redis_url.startswith("redis://redis:6379/")
        assert settings.enable_auth is True
        # Without the secret compose itself refuses to start (${JWT_SECRET:?...}).
        with pytest.raises(KeyError, match="JWT_SECRET"):
            interpolate(environment["JWT_SECRET"], {})


def test_a_weak_secret_is_refused_as_in_any_deployment():
    service = _service_containers(ROOT / "docker-compose.yml")["pushservice"]
    environment = {key: interpolate(value, {"JWT_SECRET": "changeme"})
                   for key, value in compose_environment(service).items()}
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        settings_from(environment)


@pytest.mark.parametrize("path", COMPOSE_FILES[:2], ids=[p.name for p in COMPOSE_FILES[:2]])
def test_redis_keeps_aof_and_everything_has_a_healthcheck(path):
    services = _compose(path)["services"]
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{relative(path)}: {name}"


@pytest.mark.parametrize("path", COMPOSE_FILES[:2], ids=[p.name for p in COMPOSE_FILES[:2]])
def test_services_start_after_what_they_need_is_healthy(path):
    services = _compose(path)["services"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} waits for unknown {dependency}"
            assert condition == {"condition": "service_healthy"}, f"{relative(path)}: {name}"
            assert "healthcheck" in services[dependency]
    for name, service in _service_containers(path).items():
        assert "redis" in service["depends_on"], name
        # The service's health check asks /health on its own port.
        test = " ".join(service["healthcheck"]["test"])
        assert "/health" in test and "8089" in test


@pytest.mark.parametrize("path", COMPOSE_FILES[:2], ids=[p.name for p in COMPOSE_FILES[:2]])
def test_docker_waits_for_the_stream_drain_before_killing(path):
    for name, service in _service_containers(path).items():
        grace = _shutdown_grace(compose_environment(service))
        assert _seconds(service["stop_grace_period"]) >= grace + 2 + 3, name


def test_failover_runs_two_distinct_instances_behind_the_proxy():
    compose = _compose(COMPOSE / "failover.yml")
    instances = _service_containers(COMPOSE / "failover.yml")
    assert set(instances) == {"push-1", "push-2"}
    names = {compose_environment(service)["INSTANCE_NAME"] for service in instances.values()}
    assert names == {"push-1", "push-2"}
    # Both share one Redis, so either can resume the other's clients.
    urls = {compose_environment(service)["REDIS_URL"] for service in instances.values()}
    assert len(urls) == 1
    proxy = compose["services"]["proxy"]
    image, _, tag = proxy["image"].partition(":")
    assert image in ("nginx", "haproxy") and tag  # an official image, pinned
    assert set(proxy["depends_on"]) == set(instances)
    config_mount = next(volume for volume in proxy["volumes"] if "nginx.conf" in volume)
    source, target, mode = config_mount.split(":")
    assert (COMPOSE / source).resolve() == COMPOSE / "nginx.conf"
    assert target == "/etc/nginx/nginx.conf" and mode == "ro"
    assert proxy["ports"] == ["8080:8080"]


def _nginx_directives() -> dict[str, list[str]]:
    text = re.sub(r"#[^\n]*", "", (COMPOSE / "nginx.conf").read_text(encoding="utf-8"))
    directives: dict[str, list[str]] = {}
    for statement in re.split(r"[;{}]", text):
        words = statement.split()
        if words:
            directives.setdefault(words[0], []).append(" ".join(words[1:]))
    return directives


def test_proxy_is_configured_for_server_sent_events():
    directives = _nginx_directives()
    servers = directives["server"]
    assert "push-1:8089" in " ".join(servers) and "push-2:8089" in " ".join(servers)
    assert directives["proxy_buffering"] == ["off"]
    assert directives["proxy_cache"] == ["off"]
    assert directives["gzip"] == ["off"]
    assert directives["proxy_http_version"] == ["1.1"]
    # Keep-alive to the upstream: no "Connection: close" from the client's request.
    assert 'Connection ""' in directives["proxy_set_header"]
    instances = _service_containers(COMPOSE / "failover.yml").values()
    heartbeat = max(float(compose_environment(s).get("HEARTBEAT_INTERVAL", 30)) for s in instances)
    assert _seconds(directives["proxy_read_timeout"][0]) > 2 * heartbeat
    # A refused or unreachable instance sends the client to the other one.
    assert {"error", "http_503"} <= set(directives["proxy_next_upstream"][0].split())
    assert directives["listen"] == ["8080"]


def test_original_compose_file_keeps_the_original_shape():
    compose = _compose(COMPOSE / "original.yml")
    service = compose["services"]["message-push-service"]
    original = ORIGINAL["message-push-service"]
    # Unchanged: the name, ports, REDIS_HOST and SERVICE_PORT, depends_on, restart.
    for key in ("ports", "depends_on", "restart"):
        assert service[key] == original[key], key
    assert service["environment"][:2] == original["environment"]
    # Adapted: the build context is this repository, and a secret is added.
    assert service["build"] == "../.."
    added = service["environment"][2:]
    assert [item.split("=", 1)[0] for item in added] == ["JWT_SECRET"]
    # The original depends on a redis it does not define: this one does.
    assert set(compose["services"]) == {"message-push-service", "redis"}
    assert compose["services"]["redis"]["image"].startswith("redis:7")


def _follow_module():
    spec = importlib.util.spec_from_file_location("follow", COMPOSE / "follow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_follow_script_reads_frames_as_eventsource_does():
    follow = _follow_module()
    body = (b"retry: 2500\n\n"
            b"id: e1-1-0\nevent: connected\ndata: {\"instance\": \"push-1\"}\n\n"
            b": heartbeat\n\n"
            b"id: e1-2-0\nevent: progress\ndata: {\"id\": \"m1\",\ndata: \"x\": 1}\n\n"
            b"event: closing\nretry: 1200\ndata: {\"reason\": \"shutdown\"}\n\n")
    frames = list(follow.events(io.BytesIO(body)))
    assert frames == [
        (None, "message", "", 2500),
        ("e1-1-0", "connected", '{"instance": "push-1"}', None),
        ("e1-2-0", "progress", '{"id": "m1",\n"x": 1}', None),
        ("e1-2-0", "closing", '{"reason": "shutdown"}', 1200),
    ]
