"""Operating a deployment: two instances of two gevent workers each, sharing one Redis."""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.sse_client import SSEClient
from tests.support.waiting import wait_until

FAST_REGISTRY = {"REGISTRY_REFRESH_SECONDS": "0.5", "REGISTRY_TTL_SECONDS": "2"}


def _is_message(frame) -> bool:
    return frame.dispatches and frame.event not in {"connected", "history-lost", "closing"}


def _greeting(client: SSEClient) -> dict:
    return client.wait_for(lambda frame: frame.event == "connected").json()


@pytest.fixture(scope="module")
def cluster(service):
    """Two instances sharing one Redis database, as behind a load balancer."""
    alpha = service(INSTANCE_NAME="alpha", **FAST_REGISTRY)
    beta = service(redis_url=alpha.redis_url, INSTANCE_NAME="beta", **FAST_REGISTRY)
    return alpha, beta


def _open(instance, path: str, count: int) -> list[tuple[SSEClient, dict]]:
    """``count`` streams, returned once greeted and listed: each is recorded in the
    registry in the background after its greeting."""
    clients = [instance.sse(path) for _ in range(count)]
    opened = [(client, _greeting(client)) for client in clients]
    ids = {greeting["connection_id"] for _, greeting in opened}
    wait_until(lambda: ids <= {c["connection_id"] for c in _all_connections(instance)}, 10,
               interval=0.05, message=lambda: f"{count} new streams listed")
    return opened


def _all_connections(service_process, **params) -> list[dict]:
    found, cursor = [], None
    while True:
        query = dict(params, limit=3, **({"cursor": cursor} if cursor else {}))
        page = service_process.get("/api/v1/connections", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["count"] == len(body["connections"]) <= 3
        found += body["connections"]
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def test_every_connection_of_every_worker_and_instance_is_listed(cluster):
    alpha, beta = cluster
    opened = _open(alpha, "/sse/user/list-a", 6) + _open(beta, "/sse/stream/list-b,news", 6)
    try:
        ids = {greeting["connection_id"] for _, greeting in opened}
        workers = {(greeting["instance"], greeting["worker"]) for _, greeting in opened}
        assert {instance for instance, _ in workers} == {"alpha", "beta"}
        for instance in cluster:
            listed = _all_connections(instance)
            assert ids <= {c["connection_id"] for c in listed}
            assert len(listed) == len({c["connection_id"] for c in listed}), "no duplicates"
        record = next(c for c in _all_connections(beta, user="list-a"))
        assert record["instance"] == "alpha" and record["kind"] == "user"
        assert record["topics"] == ["user:list-a"] and record["user"] == "list-a"
        assert record["worker"] in alpha.worker_pids()
        assert record["user_agent"] == "pushservice-tests"
        assert len(_all_connections(alpha, user="list-a")) == 6
        assert len(_all_connections(alpha, topic="news")) == 6
        assert {c["instance"] for c in _all_connections(alpha, instance="beta")} == {"beta"}
        bad = alpha.get("/api/v1/connections", params={"limit": "0"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_limit"
        misspelt = alpha.get("/api/v1/connections", params={"user_id": "list-a"})
        assert misspelt.status_code == 400
        assert misspelt.json()["error"]["code"] == "invalid_parameter"
        assert misspelt.json()["error"]["details"] == {"parameters": ["user_id"]}
    finally:
        for client, _ in opened:
            client.close()


def test_stats_add_up_across_workers_and_instances(cluster):
    alpha, beta = cluster
    before = alpha.get("/api/v1/connections/stats").json()["messages"]
    opened = _open(alpha, "/sse/stream/stats", 3) + _open(beta, "/sse/stream/stats", 3)
    try:
        for n in range(20):
            target = alpha if n % 2 else beta
            response = target.publish({"type": "info", "service": "ops",
                                       "target": {"channel": "stats"}, "data": {"n": n}})
            assert response.status_code == 202
        for client, _ in opened:
            assert len(client.collect(20, timeout=10, predicate=_is_message)) == 20

        def settled():
            stats = beta.get("/api/v1/connections/stats").json()
            messages = stats["messages"]
            done = (messages["published"] - before["published"] == 20
                    and messages["delivered"] - before["delivered"] >= 120)
            return stats if done else None

        stats = wait_until(settled, 10, interval=0.1)
        connections = stats["connections"]
        assert connections["total"] == sum(connections["by_instance"].values())
        assert connections["total"] == sum(connections["by_worker"].values())
        assert connections["total"] == sum(connections["by_kind"].values())
        assert connections["by_instance"]["alpha"] >= 3 and connections["by_instance"]["beta"] >= 3
        assert stats["workers"] == 4
        assert stats["messages"]["delivered"] - before["delivered"] == 120
        assert stats["stream"]["length"] >= 20
        assert stats["latency"]["samples"] > 0
        assert stats["latency"]["p50_ms"] <= stats["latency"]["p99_ms"]
    finally:
        for client, _ in opened:
            client.close()


def test_delete_closes_a_connection_held_by_the_other_instance(cluster):
    alpha, beta = cluster
    ((client, greeting),) = _open(beta, "/sse/user/kick-me", 1)
    with client:
        response = alpha.delete(f"/api/v1/connections/{greeting['connection_id']}")
        assert response.status_code == 200, response.text
        assert response.json() == {"connection_id": greeting["connection_id"], "found": True,
                                   "closed": True, "instance": "beta",
                                   "worker": greeting["worker"]}
        final = client.wait_for(lambda frame: frame.event == "closing")
        assert final.json()["reason"] == "closed_by_operator"
        assert greeting["connection_id"] not in {
            c["connection_id"] for c in _all_connections(alpha, user="kick-me")}
    missing = alpha.delete("/api/v1/connections/c000000000000nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "connection_not_found"


def test_connections_per_user_are_limited_across_instances(service):
    alpha = service(MAX_CONNECTIONS_PER_USER="2", **FAST_REGISTRY)
    beta = service(redis_url=alpha.redis_url, MAX_CONNECTIONS_PER_USER="2", **FAST_REGISTRY)
    held = _open(alpha, "/sse/user/greedy", 1) + _open(beta, "/sse/user/greedy", 1)
    try:
        # Each is recorded in the background after its greeting: the limit refuses
        # whichever stream Redis records third, so let both held ones be recorded first.
        wait_until(lambda: len(_all_connections(alpha, user="greedy")) == 2, timeout=10)
        for instance in (alpha, beta):
            with instance.sse("/sse/user/greedy") as refused:
                # Opened at once (no wait for Redis), then told it is over the limit and
                # when to come back.
                closing = refused.wait_for(lambda frame: frame.event == "closing", 10)
                payload = closing.json()
                assert payload["reason"] == "too_many_user_connections"
                assert payload["refused"] is True and payload["details"] == {"limit": 2}
                assert closing.retry == payload["retry_ms"] > 0
        with alpha.sse("/sse/user/someone-else") as other:
            assert other.status == 200
    finally:
        for client, _ in held:
            client.close()


@pytest.mark.timeout(90)
def test_a_killed_workers_connections_vanish_within_the_registry_ttl(service):
    instance = service(**FAST_REGISTRY)
    opened = _open(instance, "/sse/user/doomed", 8)
    try:
        by_worker: dict[int, set[str]] = {}
        for _, greeting in opened:
            by_worker.setdefault(greeting["worker"], set()).add(greeting["connection_id"])
        victim = max(by_worker, key=lambda pid: len(by_worker[pid]))
        listed = {c["connection_id"] for c in _all_connections(instance, user="doomed")}
        assert by_worker[victim] <= listed
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def gone():
            try:
                listed = {c["connection_id"] for c in _all_connections(instance, user="doomed")}
            except requests.ConnectionError:
                return False  # a kept-alive connection to the killed worker
            return not (by_worker[victim] & listed)

        wait_until(gone, 15, interval=0.2)
        elapsed = time.monotonic() - killed_at
        print(f"\nentries of the killed worker vanished after {elapsed:.1f}s (TTL 2 s)")
        # Within REGISTRY_TTL_SECONDS plus one refresh, and time for a busy machine to
        # answer the listing.
        assert elapsed < 2 + 0.5 + 4, "within REGISTRY_TTL_SECONDS plus one refresh"
        survivors = set().union(*(ids for pid, ids in by_worker.items() if pid != victim))
        assert survivors <= {c["connection_id"] for c in _all_connections(instance)}
    finally:
        for client, _ in opened:
            client.close()


def _metrics(instance) -> dict[str, float]:
    response = instance.get("/metrics")
    assert response.status_code == 200
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = sample.name + (json.dumps(sample.labels, sort_keys=True)
                                 if sample.labels else "")
            values[key] = values.get(key, 0) + sample.value
    return values


def test_metrics_parse_and_count_what_was_published_and_received(service):
    instance = service(**FAST_REGISTRY)
    opened = _open(instance, "/sse/stream/metered", 4)
    try:
        for n in range(15):
            assert instance.publish({"type": "info", "service": "ops",
                                     "target": {"channel": "metered"},
                                     "data": {"n": n}}).status_code == 202
        batch = [{"type": "info", "service": "ops", "target": {"channel": "metered"},
                  "data": {"n": n}} for n in range(15, 20)]
        assert instance.post("/api/v1/messages/batch",
                             json={"messages": batch}).status_code == 202
        assert instance.publish({"type": "bogus", "service": "ops",
                                 "target": {"channel": "metered"}}).status_code == 400
        for client, _ in opened:
            assert len(client.collect(20, timeout=10, predicate=_is_message)) == 20

        def flushed():
            values = _metrics(instance)
            return values if values.get("message_push_frames_delivered_total") == 80 else None

        values = wait_until(flushed, 10, interval=0.1)
        sent = values['message_push_messages_sent_total{"endpoint": "send"}']
        assert sent == 15
        assert values['message_push_messages_sent_total{"endpoint": "batch"}'] == 5
        assert values['message_push_messages_failed_total{"reason": "validation_failed"}'] == 1
        assert values["message_push_connections_total"] == 4
        assert values["message_push_message_duration_seconds_count"] >= 4
        assert values["message_push_reader_up"] == 2
        assert values["message_push_stream_length"] >= 20
        http = [key for key in values if key.startswith("message_push_http_request_duration")]
        assert any('"endpoint": "publish.send"' in key for key in http)
        assert not any("metered" in key or "c1" in key for key in values), "bounded labels"
    finally:
        for client, _ in opened:
            client.close()


def test_metrics_can_be_limited_to_an_allow_list(service):
    instance = service(METRICS_ALLOWED_NETWORKS="10.0.0.0/8")
    response = instance.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "metrics_forbidden"


@pytest.mark.timeout(90)
def test_health_turns_503_without_redis_and_200_when_it_is_back(service, make_redis_server):
    server = make_redis_server(appendonly=True)
    instance = service(redis_url=server.url(0), READER_BLOCK_MS="500")
    wait_until(lambda: instance.get("/health").status_code == 200, 10, interval=0.1)
    server.stop()
    started = time.monotonic()
    (response,) = wait_until(
        lambda: (r := instance.get("/health")).status_code == 503 and (r,), 10, interval=0.1)
    print(f"\n/health turned 503 {time.monotonic() - started:.1f}s after Redis stopped")
    assert time.monotonic() - started < 5
    body = response.json()
    assert body["status"] == "unavailable" and not body["checks"]["redis"]["ok"]
    assert int(response.headers["Retry-After"]) >= 1
    server.restart(keep_data=True)
    wait_until(lambda: all(instance.get("/health").status_code == 200 for _ in range(4)),
               20, interval=0.1)


class _Gateway(http.server.ThreadingHTTPServer):
    """A real HTTP server that records registration requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict | None]] = []
        self.lock = threading.Lock()

        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with gateway.lock:
                    gateway.requests.append((method, self.path, body))
                self.send_response(204)
                self.end_headers()

            def do_PUT(self):
                self._record("PUT")

            def do_DELETE(self):
                self._record("DELETE")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/registry"

    def seen(self, method: str) -> list:
        with self.lock:
            return [r for r in self.requests if r[0] == method]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.mark.timeout(90)
def test_instances_register_in_redis_and_with_the_gateway(service):
    gateway = _Gateway()
    try:
        instance = service(INSTANCE_NAME="gw-one", GATEWAY_URL=gateway.url,
                           GATEWAY_RENEW_SECONDS="1", **FAST_REGISTRY)
        other = service(redis_url=instance.redis_url, INSTANCE_NAME="gw-two", **FAST_REGISTRY)
        puts = wait_until(lambda: len(gateway.seen("PUT")) >= 2 and gateway.seen("PUT"),
                          15, interval=0.1)
        _, path, body = puts[0]
        assert path == "/registry/services/pushservice/instances/gw-one"
        assert body["instance"] == "gw-one" and body["port"] == instance.port
        assert body["health_url"].endswith(f":{instance.port}/health")
        assert body["version"]

        def listed():
            names = {i["instance"] for i in other.get("/admin/instances").json()["instances"]}
            return names if {"gw-one", "gw-two"} <= names else None

        wait_until(listed, 10, interval=0.1)
        instance.stop()
        deletes = wait_until(lambda: gateway.seen("DELETE"), 10, interval=0.1)
        assert deletes[0][1] == "/registry/services/pushservice/instances/gw-one"
        wait_until(lambda: {i["instance"] for i in other.get("/admin/instances").json()[
            "instances"]} == {"gw-two"}, 10, interval=0.1)
    finally:
        gateway.close()


def test_an_unreachable_gateway_never_blocks_serving(service):
    instance = service(GATEWAY_URL="http://127.0.0.1:9/registry", GATEWAY_RENEW_SECONDS="1",
                       **FAST_REGISTRY)
    assert instance.get("/health").status_code == 200
    with instance.sse("/sse/user/gw") as client:
        _greeting(client)
        instance.publish({"type": "info", "service": "ops", "target": {"user_id": "gw"},
                          "data": {}})
        client.wait_for(_is_message)
    wait_until(lambda: "gateway registration failed" in instance.output(), 10, interval=0.1)


def test_a_stopped_instance_leaves_no_traceback_in_its_output(service):
    instance = service(WORKERS="2")
    with instance.sse("/sse/user/leaving") as client:
        _greeting(client)
        response = instance.publish({"type": "info", "service": "svc",
                                     "target": {"user_id": "leaving"}, "data": {}})
        assert response.status_code == 202, response.text
        client.wait_for(_is_message)
    assert instance.stop() == 0
    output = instance.output()
    assert output.count("Worker exiting") == 2, output
    # Each worker's interpreter teardown once printed logging's "Exception ignored in:
    # _removeHandlerRef" with a traceback through gevent.
    assert "Traceback" not in output and "Exception ignored" not in output, output
