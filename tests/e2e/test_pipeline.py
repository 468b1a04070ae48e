"""The push pipeline end to end: real gunicorn with gevent workers, real Redis, real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import time

import gevent
import pytest

from tests.support.refusals import assert_refused
from tests.support.sse_client import SSEClient, StreamClosedError
from tests.support.streams import STREAM_KEY, published_count
from tests.support.waiting import wait_until

# Stream semantics end to end: every test runs on the embedded Redis 6.2 and on 7.x.
pytestmark = pytest.mark.redis_versions

CONTROL_EVENTS = {"connected", "history-lost", "closing", "heartbeat"}


def _message(n: int, **target) -> dict:
    return {"type": "progress", "service": "e2e", "target": target or {"channel": "fanout"},
            "data": {"n": n, "progress": n % 101}}


def _is_message(frame) -> bool:
    return frame.dispatches and frame.event not in CONTROL_EVENTS


def _numbers(frames) -> list[int]:
    return [frame.json()["data"]["n"] for frame in frames]


def _greeting(client: SSEClient) -> dict:
    return client.wait_for(lambda frame: frame.event == "connected").json()


@pytest.mark.timeout(180)
def test_200_clients_over_two_workers_each_get_500_messages_once_in_order(service):
    instance = service(workers=2)
    by_worker = instance.sse_on_every_worker("/sse/stream/fanout", at_least=1, total=200)
    clients = [client for held in by_worker.values() for client in held]
    try:
        received: dict[int, list[int]] = {}

        def consume(index: int, client: SSEClient) -> None:
            frames = client.collect(500, timeout=120, predicate=_is_message)
            received[index] = _numbers(frames)

        readers = [gevent.spawn(consume, i, c) for i, c in enumerate(clients)]
        started = time.monotonic()
        for start in range(0, 500, 50):
            publishers = [gevent.spawn(instance.publish, _message(n))
                          for n in range(start, start + 50)]
            gevent.joinall(publishers, raise_error=True)
            assert all(p.value.status_code == 202 for p in publishers)
        published_in = time.monotonic() - started
        gevent.joinall(readers, timeout=150, raise_error=True)
        delivered_in = time.monotonic() - started
        print(f"\n500 messages x {len(clients)} clients: published in {published_in:.2f}s, "
              f"all {500 * len(clients):,} frames delivered in {delivered_in:.2f}s")
        assert len(received) == len(clients)
        # Published concurrently, so compare each client's order with the stream's.
        reference = received[0]
        assert sorted(reference) == list(range(500))
        for numbers in received.values():
            assert numbers == reference
        health = instance.get("/health").json()
        assert health["checks"]["reader"]["ok"]
    finally:
        for client in clients:
            client.close()


def test_reconnecting_with_last_event_id_misses_nothing(live_service):
    with live_service.sse("/sse/user/reconnect") as first:
        _greeting(first)
        for n in range(5):
            assert live_service.publish(_message(n, user_id="reconnect")).status_code == 202
        assert _numbers(first.collect(5, predicate=_is_message)) == [0, 1, 2, 3, 4]
        resume_from = first.last_event_id
    for n in range(5, 10):  # published while the client is away
        live_service.publish(_message(n, user_id="reconnect"))
    with live_service.sse("/sse/user/reconnect", last_event_id=resume_from) as again:
        assert _numbers(again.collect(5, predicate=_is_message)) == [5, 6, 7, 8, 9]
        live_service.publish(_message(10, user_id="reconnect"))
        assert _numbers(again.collect(1, predicate=_is_message)) == [10]
        again.assert_silent(0.3, _is_message)
    # EventSource cannot set headers on its first connect: the query parameter works too.
    with live_service.sse(f"/sse/user/reconnect?last_event_id={resume_from}") as by_query:
        assert _numbers(by_query.collect(6, predicate=_is_message)) == list(range(5, 11))


def test_a_batch_of_1000_arrives_complete_and_in_order(live_service):
    with live_service.sse("/sse/stream/batch") as client:
        _greeting(client)
        batch = {"messages": [_message(n, channel="batch") for n in range(1000)]}
        response = live_service.post("/api/v1/messages/batch", json=batch)
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["accepted"] == 1000
        assert len({result["event_id"] for result in body["results"]}) == 1000
        assert _numbers(client.collect(1000, timeout=30, predicate=_is_message)) == list(
            range(1000))


def _stalled_client(port: int, path: str) -> socket.socket:
    """A client that sends its request and then never reads: a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _drain_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("the server never closed the stalled connection")


@pytest.mark.timeout(120)
def test_a_stalled_client_is_cut_off_without_delaying_the_others(service):
    instance = service(WRITE_TIMEOUT_SECONDS="1", CONNECTION_QUEUE_SIZE="100")
    stalled = _stalled_client(instance.port, "/sse/stream/slow")
    fast = instance.sse("/sse/stream/slow")
    try:
        _greeting(fast)
        filler = "x" * 8000
        sent = 0
        received: list[int] = []

        def read_everything() -> None:
            while True:
                frame = fast.wait_for(_is_message, timeout=30)
                received.append(frame.json()["data"]["n"])

        reader = gevent.spawn(read_everything)
        # Kernel buffers hold megabytes: keep publishing until the service gives up on
        # the stalled client (at most 40 MB). The pause lets a blocked write reach
        # WRITE_TIMEOUT_SECONDS however fast this machine publishes.
        while sent < 5000:
            batch = [dict(_message(n, channel="slow"), data={"n": n, "pad": filler})
                     for n in range(sent, sent + 100)]
            response = instance.post("/api/v1/messages/batch", json={"messages": batch})
            assert response.status_code == 202
            sent += 100
            if instance.open_connections() == 1:
                break
            gevent.sleep(0.1)
        assert sent < 5000, "the stalled client was never cut off"
        deadline = time.monotonic() + 20
        while len(received) < sent and time.monotonic() < deadline:
            gevent.sleep(0.05)
        reader.kill()
        assert received == list(range(sent)), "the reading client got everything, in order"
        data = _drain_until_closed(stalled, timeout=30)
        assert data.count(b"\nevent: progress\n") < sent
        print(f"\nstalled client cut off after {sent} messages of 8 kB; "
              f"it had taken {data.count(b'event: progress')}")
    finally:
        stalled.close()
        fast.close()


def test_sigterm_ends_the_workers_streams_with_a_final_frame(service):
    instance = service(workers=2)
    by_worker = instance.sse_on_every_worker("/sse/stream/term", at_least=4, total=16)
    clients = [client for held in by_worker.values() for client in held]
    try:
        victim, survivor = sorted(by_worker)
        os.kill(victim, signal.SIGTERM)
        for client in by_worker[victim]:
            final = client.wait_for(lambda frame: frame.event == "closing", timeout=10)
            assert final.json()["reason"] == "shutdown"
            assert final.retry is not None and final.retry > 0
            with pytest.raises(StreamClosedError):
                client.next_frame(timeout=10)
            # ... and its connection: the reconnect reaches a worker that stays.
            assert client.server_closed_connection(timeout=5)
        instance.publish(_message(1, channel="term"))
        for client in by_worker[survivor]:
            assert _numbers(client.collect(1, predicate=_is_message)) == [1]
    finally:
        for client in clients:
            client.close()


def test_stream_headers_suit_proxies(live_service):
    with live_service.sse("/sse/stream/headers") as client:
        assert client.status == 200
        assert client.headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in client.headers["cache-control"]
        assert client.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in client.headers
        first = client.next_frame()
        assert first.retry is not None
        greeting = client.next_frame()
        assert greeting.event == "connected" and greeting.id
        assert greeting.json()["connection_id"]


def test_heartbeats_keep_an_idle_stream_alive(service):
    instance = service(HEARTBEAT_INTERVAL="0.3")
    with instance.sse("/sse/user/idle") as client:
        beats = client.collect(2, timeout=5, predicate=lambda frame: frame.is_heartbeat)
        assert len(beats) == 2
    with instance.sse("/sse/user/idle?heartbeat_events=1") as client:
        visible = client.wait_for(lambda frame: frame.event == "heartbeat", timeout=5)
        assert "time" in visible.json()


def test_frames_without_event_field_for_onmessage_handlers(live_service):
    with live_service.sse("/sse/user/plain?named=0") as client:
        _greeting(client)
        live_service.publish(_message(1, user_id="plain"))
        frame = client.wait_for(lambda f: f.dispatches and f.event != "connected")
        assert frame.event is None and frame.type == "message"
        assert frame.json()["data"]["n"] == 1


def test_beyond_max_connections_a_stream_is_told_when_to_come_back(service):
    instance = service(MAX_CONNECTIONS="3")
    held = [instance.sse("/sse/user/full") for _ in range(3)]
    try:
        for client in held:
            _greeting(client)
        with instance.sse("/sse/user/full") as refused:
            refusal = assert_refused(refused, "too_many_connections")
            assert "MAX_CONNECTIONS" in refusal["message"]
            assert refused.server_closed_connection()  # the retry may find another worker
        held.pop().close()

        def reused() -> bool:  # once the server has noticed the hang-up
            instance.post("/api/v1/messages/broadcast",
                          json={"type": "info", "service": "e2e", "data": {}})
            with instance.sse("/sse/user/full") as again:
                return again.status == 200

        wait_until(reused, 10, interval=0.1, message="the freed slot to be reused")
    finally:
        for client in held:
            client.close()


def test_a_client_that_hangs_up_is_forgotten_at_once(service):
    # Heartbeats far apart and nothing published: no write can reveal the hang-up.
    instance = service(HEARTBEAT_INTERVAL="300", MAX_CONNECTIONS="2")
    clients = [instance.sse("/sse/user/gone") for _ in range(2)]
    try:
        for client in clients:
            _greeting(client)
        assert instance.open_connections() == 2
        # Recorded in the registry in the background after their greetings.
        wait_until(lambda: len(instance.get("/api/v1/connections", params={
            "user": "gone"}).json()["connections"]) == 2, 10, message="both streams listed")
        for client in clients:
            client.close()
        wait_until(lambda: instance.open_connections() == 0, 10,
                   message="the closed streams to give up their slots")
        listed = instance.get("/api/v1/connections", params={"user": "gone"}).json()
        assert listed["connections"] == []
        with instance.sse("/sse/user/gone") as again:
            assert again.status == 200
    finally:
        for client in clients:
            client.close()


def test_bad_publish_requests_get_json_errors(live_service):
    response = live_service.post("/api/v1/messages/send", data="{not json",
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    response = live_service.post("/api/v1/messages/send", data="x=1",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    response = live_service.publish({"type": "nope", "service": "e2e",
                                     "target": {"user_id": "1"}})
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "type"


def test_redis_down_means_503_and_nothing_half_written(service, make_redis_server):
    server = make_redis_server(appendonly=True)
    instance = service(redis_url=server.url(0))
    assert instance.publish(_message(1)).status_code == 202
    server.stop()
    try:
        response = instance.post("/api/v1/messages/batch",
                                 json={"messages": [_message(n) for n in range(10)]})
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == "redis_unavailable"
    finally:
        server.restart(keep_data=True)
    client = server.client(0)
    stream_key = STREAM_KEY
    assert published_count(client, stream_key) == 1

