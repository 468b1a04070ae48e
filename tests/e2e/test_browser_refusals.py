"""A page with a plain EventSource (no client library) whose stream is refused for a reason
that passes: the instance is full, the worker started while Redis was down, the resume
needed Redis while it was down. Once the cause passes the page streams again by itself,
without a reload, and receives what is published then (and what it had missed)."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>refused, then back</title></head>
<body>
<script>
const seen = window.seen = {connected: 0, closings: [], messages: [], errors: []};
const es = window.es = new EventSource(__STREAM_URL__);
es.addEventListener('connected', () => { seen.connected += 1; });
es.addEventListener('closing', (e) => { seen.closings.push(JSON.parse(e.data)); });
es.addEventListener('info', (e) => { seen.messages.push(JSON.parse(e.data).id); });
es.onerror = () => { seen.errors.push(es.readyState); };
</script>
</body>
</html>
"""


def _show(browser, page_server, stream_url: str) -> None:
    page_server.add("/", PAGE.replace("__STREAM_URL__", json.dumps(stream_url)))
    browser.open(page_server.url("/"))


def _publish(instance, message_id: str) -> str:
    response = instance.publish({"id": message_id, "type": "info", "service": "browser",
                                 "target": {"channel": "room"}, "data": {}})
    assert response.status_code == 202, response.text
    return response.json()["event_id"]


def _refusal(browser, reason: str, timeout: float = 20) -> dict:
    refusal = browser.wait_for(f"seen.closings.find((c) => c.reason == '{reason}')", timeout,
                               what=f"the stream refused with {reason}")
    assert refusal["refused"] is True and refusal["retry_ms"] > 0
    # EventSource is waiting to reconnect, not closed for good.
    assert browser.evaluate("es.readyState") in (0, 1)
    assert browser.evaluate("seen.connected") == 0
    return refusal


def _back(browser, page_server, started: float) -> float:
    browser.wait_for("seen.connected == 1 && es.readyState == 1", 30,
                     what="the page streaming again by itself")
    assert page_server.requests.count("/") == 1, "the page was not reloaded"
    assert 2 not in browser.evaluate("seen.errors"), "the EventSource never closed for good"
    return time.monotonic() - started


@pytest.mark.timeout(90)
def test_a_page_refused_by_a_full_instance_streams_once_there_is_room(
        service, page_server, browser):
    instance = service(workers=1, MAX_CONNECTIONS="2",
                       CORS_ORIGINS=json.dumps([page_server.origin]))
    held = [instance.sse("/sse/stream/room") for _ in range(2)]
    try:
        for client in held:
            client.wait_for(lambda frame: frame.event == "connected")
        _show(browser, page_server, instance.url("/sse/stream/room"))
        refusal = _refusal(browser, "too_many_connections")
    finally:
        for client in held:
            client.close()
    freed = time.monotonic()
    back_s = _back(browser, page_server, freed)
    _publish(instance, "after-room")
    browser.wait_for("seen.messages.includes('after-room')", 15, what="the message")
    assert browser.evaluate("seen.messages") == ["after-room"]
    print(f"\nfull instance: refused (retry {refusal['retry_ms']} ms), streaming again "
          f"{back_s:.1f} s after slots were freed")


@pytest.mark.timeout(90)
def test_a_page_refused_while_redis_was_down_at_start_streams_once_it_is_up(
        service, make_redis_server, page_server, browser):
    server = make_redis_server()
    server.stop()
    instance = service(redis_url=server.url(0), workers=1,
                       CORS_ORIGINS=json.dumps([page_server.origin]))
    _show(browser, page_server, instance.url("/sse/stream/room"))
    refusal = _refusal(browser, "not_ready")
    server.start()
    started = time.monotonic()
    back_s = _back(browser, page_server, started)
    wait_until(lambda: instance.get("/health").status_code == 200, 15, message="health")
    _publish(instance, "after-start")
    browser.wait_for("seen.messages.includes('after-start')", 15, what="the message")
    assert browser.evaluate("seen.messages") == ["after-start"]
    print(f"\nworker started without Redis: refused (retry {refusal['retry_ms']} ms), "
          f"streaming again {back_s:.1f} s after Redis was up")


@pytest.mark.timeout(90)
def test_a_page_whose_resume_needed_redis_while_it_was_down_resumes_once_it_is_up(
        service, make_redis_server, page_server, browser):
    server = make_redis_server(appendonly=True)
    # Nothing kept in memory: every resume reads Redis.
    instance = service(redis_url=server.url(0), workers=1, RECENT_HISTORY_ENTRIES="0",
                       CORS_ORIGINS=json.dumps([page_server.origin]))
    first = _publish(instance, "m1")
    _publish(instance, "m2")
    _publish(instance, "m3")
    server.stop()
    try:
        # The page resumes after m1 (its last event id kept across a reload, say).
        _show(browser, page_server, instance.url(f"/sse/stream/room?last_event_id={first}"))
        refusal = _refusal(browser, "redis_unavailable")
    finally:
        server.start()
    started = time.monotonic()
    back_s = _back(browser, page_server, started)
    browser.wait_for("seen.messages.length == 2", 15, what="what the page had missed")
    _publish(instance, "m4")
    browser.wait_for("seen.messages.length == 3", 15, what="the new message")
    assert browser.evaluate("seen.messages") == ["m2", "m3", "m4"]
    print(f"\nresume while Redis was down: refused (retry {refusal['retry_ms']} ms), "
          f"streaming again {back_s:.1f} s after Redis was up")
