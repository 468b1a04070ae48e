"""Instance registration: one leading worker keeps the instance's record in Redis and its
registration with the gateway alive; the master removes both at exit. The gateway here is
a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import gevent
import pytest

from pushservice.ops.instances import (
    Gateway,
    GatewayError,
    InstanceRegistration,
    deregister_instance,
    instance_record,
)
from pushservice.store import DeploymentRecords, MessageStore
from tests.support.waiting import wait_until


class FakeGateway:
    """Records the registration requests it receives; answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict | None, str | None]] = []
        self.status = 200
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                gateway.requests.append((self.command, self.path, body,
                                         self.headers.get("Authorization")))
                self.send_response(gateway.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_DELETE = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/registry"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway():
    server = FakeGateway()
    yield server
    server.close()


@pytest.fixture
def deployment(fake_clients, settings) -> DeploymentRecords:
    store = MessageStore(settings)
    yield DeploymentRecords(store.connections, store.keys)
    store.close()


@pytest.fixture
def registrations():
    started: list[InstanceRegistration] = []
    yield started
    for registration in started:
        registration.stop()


def start(registrations, settings, store, **changes) -> InstanceRegistration:
    registration = InstanceRegistration(
        settings.replace(registry_refresh_seconds=0.05, registry_ttl_seconds=0.5, **changes),
        store)
    registration.start()
    registrations.append(registration)
    return registration


def test_the_record_names_where_to_reach_the_instance(settings):
    chosen = settings.replace(instance_name="push-1", advertise_host="10.0.0.5",
                              service_port=8090)

    record = instance_record(chosen, started_at=1.5)

    assert record["instance"] == "push-1" and record["service"] == "pushservice"
    assert record["address"] == "10.0.0.5" and record["port"] == 8090
    assert record["health_url"] == "http://10.0.0.5:8090/health"
    assert record["started_at"] == 1.5


def test_one_worker_leads_and_the_instance_is_listed(registrations, settings,
                                                     deployment):
    first = start(registrations, settings, deployment, instance_name="push-1")

    wait_until(lambda: deployment.instances(), 5, message="the instance's record")

    assert first.leading
    assert [r["instance"] for r in deployment.instances()] == ["push-1"]


def test_leadership_passes_to_another_worker_when_the_leader_stops(
        registrations, settings, deployment, monkeypatch):
    first = start(registrations, settings, deployment, instance_name="push-1")
    wait_until(lambda: first.leading, 5, message="a leader")
    # A second worker of the same instance (another holder name) waits its turn.
    monkeypatch.setattr(InstanceRegistration, "holder", property(lambda self: f"w{id(self)}"))
    second = start(registrations, settings, deployment, instance_name="push-1")
    wait_until(lambda: second._loop.alive, 1, message="the second worker")
    gevent.sleep(0.2)  # several rounds: it never takes the lease while the first holds it

    assert not second.leading

    first.stop()
    wait_until(lambda: second.leading, 5, message="the second worker to lead")


def test_a_stopped_instance_disappears_when_its_record_expires(registrations, settings,
                                                               deployment):
    registration = start(registrations, settings, deployment, instance_name="push-1")
    wait_until(lambda: deployment.instances(), 5, message="the instance's record")

    registration.stop()

    wait_until(lambda: not deployment.instances(), 5, message="the record to expire")


def test_the_leader_registers_with_the_gateway_and_renews(registrations, settings,
                                                          deployment, gateway):
    start(registrations, settings, deployment, instance_name="push-1",
          gateway_url=gateway.url, gateway_token="secret", gateway_renew_seconds=1.0)

    wait_until(lambda: len(gateway.requests) >= 2, 5, message="a registration and a renewal")

    method, path, body, authorization = gateway.requests[0]
    assert (method, path) == ("PUT", "/registry/services/pushservice/instances/push-1")
    assert body["instance"] == "push-1"
    assert authorization == "Bearer secret"


def test_gateway_failures_are_retried_with_backoff(registrations, settings, deployment,
                                                  gateway):
    gateway.status = 503
    start(registrations, settings, deployment, instance_name="push-1",
          gateway_url=gateway.url, gateway_renew_seconds=60.0)

    wait_until(lambda: len(gateway.requests) >= 2, 10, message="a retried registration")
    gateway.status = 200
    count = len(gateway.requests)
    wait_until(lambda: len(gateway.requests) > count, 10, message="a successful retry")


def test_gateway_errors_say_what_was_refused(settings, gateway):
    gateway.status = 500
    with pytest.raises(GatewayError, match="HTTP 500"):
        Gateway(settings.replace(gateway_url=gateway.url)).register({"instance": "x"})


def test_a_gateway_that_does_not_answer_is_an_error(settings):
    with pytest.raises(GatewayError):
        Gateway(settings.replace(gateway_url="http://127.0.0.1:9")).register({})


def test_the_master_deregisters_from_redis_and_the_gateway(registrations, settings,
                                                           deployment, gateway):
    chosen = {"instance_name": "push-1", "gateway_url": gateway.url}
    start(registrations, settings, deployment, **chosen)
    wait_until(lambda: deployment.instances(), 5, message="the instance's record")
    registrations[0].stop()

    deregister_instance(settings.replace(**chosen))

    assert deployment.instances() == []
    assert gateway.requests[-1][:2] == ("DELETE", "/registry/services/pushservice/instances/push-1")


def test_deregistering_an_instance_the_gateway_forgot_is_fine(settings, gateway):
    gateway.status = 404
    Gateway(settings.replace(gateway_url=gateway.url)).deregister()
