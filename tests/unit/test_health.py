"""/health through Flask's test client on fakeredis: 200 only while Redis answers and
this worker's reader reads; 503 with Retry-After otherwise."""

from __future__ import annotations

import gevent
import pytest

from pushservice import create_app
from pushservice.errors import StoreUnavailableError
from pushservice.settings import Settings
from tests.support.waiting import wait_until


@pytest.fixture
def app(fake_clients):  # stopped after the test by conftest's stop_started_services
    return create_app(Settings(enable_auth=False, reader_block_ms=20))


def get_health(app):
    response = app.test_client().get("/health")
    return response.status_code, response.get_json(), response.headers


def test_a_worker_that_reads_is_healthy(app):
    wait_until(lambda: get_health(app)[0] == 200, 5, message="the reader to start reading")

    status, body, _ = get_health(app)
    assert status == 200

    assert body["status"] == "ok"
    assert body["checks"]["redis"]["ok"] is True
    reader = body["checks"]["reader"]
    assert reader["alive"] is True and reader["last_error"] is None
    assert reader["seconds_since_last_read"] < 5
    assert body["connections"] == {"worker": 0, "instance": 0}


def test_redis_that_does_not_answer_makes_it_unavailable(app, monkeypatch):
    wait_until(lambda: get_health(app)[0] == 200, 5, message="a healthy start")

    def down():
        raise StoreUnavailableError("Redis is unavailable: connection refused")

    monkeypatch.setattr(app.extensions["pushservice"].store, "ping", down)
    status, body, headers = get_health(app)

    assert status == 503 and body["status"] == "unavailable"
    assert body["checks"]["redis"]["ok"] is False
    assert headers["Retry-After"] == "2"


def test_a_dead_reader_makes_it_unavailable(app):
    wait_until(lambda: get_health(app)[0] == 200, 5, message="a healthy start")
    service = app.extensions["pushservice"]

    service.reader.stop()
    service.reader.start = lambda: None  # the view must not bring it back

    status, body, _ = get_health(app)
    assert status == 503
    assert body["checks"]["reader"]["alive"] is False


def test_a_reader_stuck_in_a_read_makes_it_unavailable(app, monkeypatch):
    wait_until(lambda: get_health(app)[0] == 200, 5, message="a healthy start")
    reader = app.extensions["pushservice"].reader
    monkeypatch.setattr(reader.store, "read", lambda *args: gevent.sleep(3600))
    gevent.sleep(0.1)  # the read under way ends; the next one never does
    reader.last_read_ok -= 60

    status, body, _ = get_health(app)
    assert status == 503
    assert body["checks"]["reader"]["alive"] is True
    assert body["checks"]["reader"]["ok"] is False
    assert body["checks"]["reader"]["seconds_since_last_read"] >= 60
