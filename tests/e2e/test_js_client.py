"""The JavaScript client (/static/pushservice.js and .mjs) in a real browser, against the
real service: what a page that uses it sees when workers restart, the service refuses,
tokens expire, the user navigates back and forth, history is lost, and acknowledgements
are asked for."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import redis
import requests

from pushservice.auth import build_claims, mint_token
from pushservice.engine.position import parse_event_id
from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

SECRET = "e2e-js-client-0123456789abcdef0123456789abcdef"

# Records what the client reports, for the test to read back.
HARNESS = """
window.seen = {messages: [], open: [], closing: [], lost: [], reconnecting: [], fatal: [],
               tokenExpired: 0, ackErrors: []};
window.record = (push) => {
  push.on('message', (m) => seen.messages.push(m.data.n));
  push.on('open', (greeting) => seen.open.push(greeting));
  push.on('closing', (closing) => seen.closing.push(closing));
  push.on('history-lost', (lost) => seen.lost.push(lost));
  push.on('reconnecting', (r) => seen.reconnecting.push(
    {reason: r.reason, status: r.status, closing: r.closing, delay: r.delay}));
  push.on('fatal', (f) => seen.fatal.push(f));
  push.on('token-expired', () => { seen.tokenExpired += 1; });
  push.on('ack-error', (e) => seen.ackErrors.push(e));
  return push;
};
"""


def _classic_page(base_url: str, script: str, head: str = "") -> str:
    """A page that loads the client as a classic script and runs ``script``."""
    return (f"<!doctype html><meta charset='utf-8'><title>push</title>"
            f"<script>{head}{HARNESS}</script>"
            f"<script src='{base_url}/static/pushservice.js'></script>"
            f"<script>{script}</script>")


def _module_page(base_url: str, script: str) -> str:
    """A page that imports the client as an ES module and runs ``script`` in the module."""
    return (f"<!doctype html><meta charset='utf-8'><title>push</title>"
            f"<script>{HARNESS}</script>"
            f"<script type='module'>import {{connect}} from '{base_url}/static/pushservice.mjs';"
            f"\n{script}</script>")


def _start(service, page_server, **env):
    """A service instance that allows the page server's origin."""
    env.setdefault("HEARTBEAT_INTERVAL", "300")
    env.setdefault("SSE_RETRY_MS", "500")
    return service(CORS_ORIGINS=json.dumps([page_server.origin]), **env)


def _publish(instance, n: int, type_: str = "progress", headers=None, **target) -> str:
    """Publish message number ``n``; returns its event id."""
    response = instance.publish({
        "type": type_, "service": "knowledge-service",
        "target": target or {"user_id": "123"}, "data": {"n": n, "progress": 50},
    }, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["event_id"]


def _messages(browser, count: int, timeout: float = 15) -> list[int]:
    return browser.wait_for(f"seen.messages.length >= {count} && seen.messages", timeout,
                            what=f"{count} messages")


def test_every_message_and_each_type_on_one_connection(service, page_server, browser):
    instance = _start(service, page_server)
    for name in ("pushservice.js", "pushservice.mjs"):
        response = instance.get(f"/static/{name}")
        assert response.status_code == 200
        assert response.headers["Content-Type"].split(";")[0] in (
            "text/javascript", "application/javascript")
        assert response.headers["Cache-Control"] == "no-cache"
    # No url: the client talks to the service it was loaded from.
    page_server.add("/", _classic_page(instance.base_url, """
      window.typed = {progress: [], error: [], success: []};
      window.push = record(PushService.connect({user: '123'}));
      push.on('message', () => { throw new Error('a broken handler'); });
      push.on('progress', (m) => typed.progress.push(m.data.n));
      push.on('error', (m) => typed.error.push(m.data.n));
      push.on('success', (m, event) => typed.success.push([m.data.n, event.lastEventId]));
      try { push.on('connected', () => {}); } catch (e) { window.misnamed = e.message; }
    """))
    browser.open(page_server.url("/"))
    browser.wait_for("seen.open.length == 1", 15, what="the stream to open")
    assert "did you mean 'open'" in browser.evaluate("misnamed")
    assert browser.evaluate("push.readyState") == 1

    ids = [_publish(instance, n, type_) for n, type_ in
           enumerate(["progress", "error", "success", "info"], start=1)]
    assert _messages(browser, 4) == [1, 2, 3, 4]
    # One handler threw; every other handler still got its message, each exactly once.
    assert browser.evaluate("typed") == {"progress": [1], "error": [2], "success": [[3, ids[2]]]}
    assert browser.evaluate("push.lastEventId") == ids[3]
    assert instance.open_connections() == 1
    seen = browser.evaluate("seen")
    assert len(seen["open"]) == 1 and seen["reconnecting"] == [] and seen["fatal"] == []


def test_resume_across_a_worker_restart_as_an_es_module(service, page_server, browser):
    instance = _start(service, page_server)
    page_server.add("/", _module_page(instance.base_url, """
      window.push = record(connect({channels: ['jobs', 'alerts']}));
    """))
    browser.open(page_server.url("/"))
    first = browser.wait_for("seen.open.length == 1 && seen.open[0]", 15, what="the stream")
    assert sorted(first["topics"]) == ["alerts", "jobs"]
    _publish(instance, 1, channel="jobs")
    assert _messages(browser, 1) == [1]

    os.kill(first["worker"], signal.SIGTERM)  # gunicorn starts a new worker in its place
    browser.wait_for("seen.closing.length >= 1", 10, what="the worker's closing frame")
    for n in range(2, 7):  # while the page reconnects
        _publish(instance, n, channel="alerts" if n % 2 else "jobs")
    # The reconnect may reuse the kept-alive connection to the stopping worker, which
    # closes that stream at once: the page then reconnects again, to a live worker.
    browser.wait_for(f"seen.open.length >= 2 && seen.open.at(-1).worker != {first['worker']}"
                     " && push.readyState == 1", 20, what="the stream on a live worker")
    _publish(instance, 7, channel="jobs")
    assert _messages(browser, 7) == [1, 2, 3, 4, 5, 6, 7]
    assert {c["reason"] for c in browser.evaluate("seen.closing")} == {"shutdown"}
    assert browser.evaluate("seen.lost") == []
    wait_until(lambda: instance.open_connections() == 1, 10, message="one stream open")
    assert browser.evaluate("seen.messages.length") == 7  # nothing arrived twice


def test_a_refused_stream_comes_back_when_there_is_room(service, page_server, browser):
    instance = _start(service, page_server, MAX_CONNECTIONS="1")
    holder = instance.sse("/sse/user/holder")
    try:
        assert holder.status == 200
        earlier = _publish(instance, 1)
        _publish(instance, 2)
        # A page that comes back (its last event id kept in sessionStorage, say) while
        # the instance is full.
        page_server.add("/", _classic_page(instance.base_url, f"""
          window.push = record(PushService.connect({{
            url: {json.dumps(instance.base_url)}, user: '123', lastEventId: '{earlier}',
            backoff: {{base: 200, cap: 2000}},
          }}));
        """))
        browser.open(page_server.url("/"))
        refused = browser.wait_for(
            "seen.reconnecting.find((r) => r.status == 503 || r.reason == 'closing')", 15,
            what="the service to refuse the stream")
        _publish(instance, 3)  # while refused
        assert browser.evaluate("seen.open.length") == 0
    finally:
        holder.close()
    browser.wait_for("seen.open.length == 1", 20, what="the stream once there is room")
    _publish(instance, 4)
    assert _messages(browser, 3) == [2, 3, 4]
    seen = browser.evaluate("seen")
    assert seen["fatal"] == [] and seen["lost"] == []
    print(f"\nrefused with {refused}; reconnects: {len(seen['reconnecting'])}")
    wait_until(lambda: instance.open_connections() == 1, 10, message="one stream open")


def test_a_stream_gone_silent_is_replaced(service, page_server, browser):
    instance = _start(service, page_server, HEARTBEAT_INTERVAL="0.5")
    page_server.add("/", _classic_page(instance.base_url, f"""
      window.push = record(PushService.connect({{url: {json.dumps(instance.base_url)},
                                                 user: '123'}}));
    """))
    browser.open(page_server.url("/"))
    first = browser.wait_for("seen.open.length == 1 && seen.open[0]", 15, what="the stream")
    _publish(instance, 1)
    assert _messages(browser, 1) == [1]

    # The worker freezes (as a host that vanished would): no frame, no close, only silence.
    os.kill(first["worker"], signal.SIGSTOP)
    try:
        response = requests.post(instance.url("/api/v1/messages/send"), timeout=10, json={
            "type": "info", "service": "knowledge-service", "target": {"user_id": "123"},
            "data": {"n": 2}})  # a new connection: the frozen worker cannot take it
        assert response.status_code == 202, response.text
        browser.wait_for(f"seen.open.length >= 2 && seen.open.at(-1).worker != {first['worker']}",
                         15, what="a new stream on the other worker")
    finally:
        os.kill(first["worker"], signal.SIGCONT)
    assert _messages(browser, 2) == [1, 2]
    assert any(r["reason"] == "stalled" for r in browser.evaluate("seen.reconnecting"))


def _token(ttl: float, subject: str = "123") -> str:
    return mint_token(build_claims(subject, ttl_seconds=ttl), SECRET)


def test_a_fresh_token_before_reconnecting_and_a_forbidden_stream_gives_up(
        service, page_server, browser):
    instance = _start(service, page_server, ENABLE_AUTH="true", JWT_SECRET=SECRET,
                      JWT_LEEWAY_SECONDS="0")
    # The page's own backend mints a token each time the page asks: 3 s, then longer, for
    # the stream of user 123; the other stream asks elsewhere, so it never takes the 3 s.
    lifetimes = iter([3])
    minted = []

    def token(lifetime: int | None = None) -> str:
        minted.append(1)
        return _token(lifetime or next(lifetimes, 600))

    page_server.add("/token", token, "text/plain")
    page_server.add("/token-other", lambda: token(600), "text/plain")
    page_server.add("/", _classic_page(instance.base_url, f"""
      const getToken = () => fetch('/token').then((r) => r.text());
      const url = {json.dumps(instance.base_url)};
      window.push = record(PushService.connect({{url, user: '123', getToken}}));
      window.other = PushService.connect({{url, user: '456',
        getToken: () => fetch('/token-other').then((r) => r.text())}});
      window.otherFatal = [];
      other.on('fatal', (f) => otherFatal.push(f));
    """))
    publisher = {"Authorization": "Bearer " + mint_token(build_claims(
        "knowledge-service", service="knowledge-service", publish=["user:*"]), SECRET)}

    browser.open(page_server.url("/"))
    browser.wait_for("seen.open.length == 1", 15, what="the stream to open")
    _publish(instance, 1, headers=publisher)
    assert _messages(browser, 1) == [1]
    browser.wait_for("seen.tokenExpired == 1", 10, what="the token to expire")
    _publish(instance, 2, headers=publisher)
    browser.wait_for("seen.open.length == 2", 10, what="the stream with a fresh token")
    _publish(instance, 3, headers=publisher)
    assert _messages(browser, 3) == [1, 2, 3]
    assert browser.evaluate("seen.closing.map((c) => c.reason)") == ["token_expired"]

    # The token does not allow user 456: the client stops instead of retrying forever.
    fatal = browser.wait_for("otherFatal.length && otherFatal", 10, what="the refusal")
    assert fatal == [{"reason": "rejected", "status": 403}]
    assert browser.evaluate("other.readyState") == 2
    assert len(minted) >= 3
    assert browser.evaluate("seen.fatal") == []


def test_back_and_forward_resume_without_loss(service, page_server, browser):
    instance = _start(service, page_server)
    page_server.add("/", _classic_page(instance.base_url, f"""
      addEventListener('pageshow', (e) => {{ window.restored = e.persisted; }});
      window.push = record(PushService.connect({{url: {json.dumps(instance.base_url)},
                                                 user: '123'}}));
    """))
    page_server.add("/other", "<!doctype html><p>another page</p>")

    browser.open(page_server.url("/"))
    browser.wait_for("seen.open.length == 1", 15, what="the stream to open")
    _publish(instance, 1)
    assert _messages(browser, 1) == [1]

    def away_and_back(publish_while_away: int | None, opened: int) -> None:
        browser.open(page_server.url("/other"))
        wait_until(lambda: instance.open_connections() == 0, 10,
                   message="the page left behind to let its stream go")
        if publish_while_away is not None:
            _publish(instance, publish_while_away)
        browser.driver.back()
        browser.wait_for(f"window.restored !== undefined && seen.open.length == {opened}", 15,
                         what="the page to show again, stream open")
        assert browser.evaluate("window.restored"), (
            "the browser reloaded the page instead of restoring it from its back/forward cache")

    # Away with nothing published, then away while a message is published: the second
    # return must still resume (a resumed stream's `connected` event carries no id).
    away_and_back(None, 2)
    assert browser.evaluate("push.lastEventId") != ""
    away_and_back(2, 3)
    assert _messages(browser, 2) == [1, 2]
    _publish(instance, 3)
    assert _messages(browser, 3) == [1, 2, 3]
    assert instance.open_connections() == 1


def test_history_lost_is_surfaced_after_redis_lost_its_data(service, page_server, browser):
    instance = _start(service, page_server)
    page_server.add("/", _classic_page(instance.base_url, f"""
      window.push = record(PushService.connect({{url: {json.dumps(instance.base_url)},
                                                 user: '123', backoff: {{base: 200, cap: 1000}}}}));
    """))
    browser.open(page_server.url("/"))
    browser.wait_for("seen.open.length == 1", 15, what="the stream to open")
    before = _publish(instance, 1)
    assert _messages(browser, 1) == [1]

    instance.stop()
    redis.Redis.from_url(instance.redis_url).flushdb()  # Redis lost everything
    instance.start()
    lost = browser.wait_for("seen.lost.length && push.readyState == 1 && seen.lost", 20,
                            what="the stream to reopen, with history-lost")
    assert [x["reason"] for x in lost] == ["stream_reset"]
    # The id the page held: message 1's, or a later one of the same stream (a heartbeat
    # moves it past the worker's own health probes, which no page receives).
    held, sent = parse_event_id(lost[0]["last_event_id"]), parse_event_id(before)
    assert held.epoch == sent.epoch and held.key >= sent.key
    _publish(instance, 2)
    assert _messages(browser, 2) == [1, 2]
    assert browser.evaluate("seen.fatal") == []


# Records every request the page makes with fetch, and its answer.
FETCH_RECORDER = """
window.requests = [];
const realFetch = window.fetch;
window.fetch = async (url, init = {}) => {
  const entry = {url: String(url), method: init.method || 'GET', body: init.body || null,
                 auth: (init.headers || {}).Authorization || null, status: null};
  requests.push(entry);
  const response = await realFetch(url, init);
  entry.status = response.status;
  return response;
};
"""


def test_acknowledgements_are_sent_after_the_handlers_and_never_break_the_page(
        service, page_server, browser):
    instance = _start(service, page_server)
    page_server.add("/", _classic_page(instance.base_url, f"""
      window.push = record(PushService.connect({{url: {json.dumps(instance.base_url)},
                                                 user: '123', ack: true}}));
      push.on('warning', () => {{ throw new Error('not handled'); }});
      push.on('success', async () => {{ await new Promise((r) => setTimeout(r, 50)); }});
      // Handled too slowly: acknowledged after the message expired.
      push.on('status', async () => {{ await new Promise((r) => setTimeout(r, 2500)); }});
    """, head=FETCH_RECORDER))
    browser.open(page_server.url("/"))
    browser.wait_for("seen.open.length == 1", 15, what="the stream to open")

    def publish(n: int, type_: str, require_ack: bool, ttl: int = 3600) -> str:
        response = instance.publish({
            "type": type_, "service": "knowledge-service", "target": {"user_id": "123"},
            "data": {"n": n}, "metadata": {"require_ack": require_ack, "ttl": ttl}})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def acknowledged_ids(requests) -> set[str]:
        ids = set()
        for request in requests:
            # JSON always: {"ids": [...]} for several, {} beside the id in the URL for one.
            ids.update(json.loads(request["body"]).get("ids") or [request["url"].split("/")[-2]])
        return ids

    acked = publish(1, "info", True)
    publish(2, "info", False)
    publish(3, "warning", True)  # its handler throws: not acknowledged
    acked_async = publish(4, "success", True)
    assert _messages(browser, 4) == [1, 2, 3, 4]

    def ack_requests():
        found = browser.evaluate("requests.filter((r) => r.url.includes('/ack') && r.status)")
        return found if acknowledged_ids(found) >= {acked, acked_async} else None

    requests = wait_until(ack_requests, 10, message="the acknowledgements")
    assert all(r["method"] == "POST" for r in requests)
    assert acknowledged_ids(requests) == {acked, acked_async}
    assert all(200 <= r["status"] < 300 for r in requests), requests
    assert browser.evaluate("seen.ackErrors") == []
    for message_id in (acked, acked_async):
        status = instance.get(f"/api/v1/messages/{message_id}").json()
        assert status["state"] == "acknowledged", status

    # Acknowledged after the message expired: reported (once in the console), not fatal.
    late = publish(5, "status", True, ttl=1)
    errors = browser.wait_for("seen.ackErrors.length >= 1 && seen.ackErrors", 15,
                              what="the ack-error event")
    assert errors == [{"ids": [late], "status": 404, "reason": "not_found"}]
    warnings = [line for line in browser.console() if "acknowledging messages failed" in line]
    assert len(warnings) == 1
    publish(6, "info", True)
    assert _messages(browser, 6) == [1, 2, 3, 4, 5, 6]
    assert browser.evaluate("push.readyState") == 1


def test_a_page_acknowledges_what_it_shows_and_after_a_reload_is_not_shown_it_again(
        service, page_server, browser):
    instance = _start(service, page_server)
    page_server.add("/", _classic_page(instance.base_url, f"""
      // The page resumes from where it first started, so that a reload replays everything.
      const start = sessionStorage.getItem('start') || '';
      window.push = record(PushService.connect({{url: {json.dumps(instance.base_url)},
                                                 user: '123', ack: true, lastEventId: start}}));
      push.on('open', () => {{
        if (!sessionStorage.getItem('start')) sessionStorage.setItem('start', push.lastEventId);
      }});
      push.on('warning', () => {{ throw new Error('could not show it'); }});
    """))
    browser.open(page_server.url("/"))
    browser.wait_for("seen.open.length == 1", 15, what="the stream to open")

    def publish(n: int, type_: str, require_ack: bool = True) -> str:
        response = instance.publish({
            "type": type_, "service": "orders", "target": {"user_id": "123"},
            "data": {"n": n}, "metadata": {"require_ack": require_ack}})
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def state(message_id: str) -> str:
        return instance.get(f"/api/v1/messages/{message_id}").json()["state"]

    shown, not_shown = publish(1, "info"), publish(2, "warning")
    assert _messages(browser, 2) == [1, 2]
    wait_until(lambda: state(shown) == "acknowledged", 10, message="the acknowledgement")
    wait_until(lambda: state(not_shown) == "delivered", 10, message="its write recorded")

    browser.driver.refresh()
    browser.wait_for("seen.open.length == 1", 15, what="the stream to reopen")
    publish(3, "info", require_ack=False)
    # The replay holds both; the acknowledged one is not shown again, the other is.
    assert _messages(browser, 2) == [2, 3]
    assert browser.evaluate("seen.messages") == [2, 3]


def _documented_examples() -> list[tuple[str, str]]:
    """The ```js and ```html blocks of docs/javascript-client.md, verbatim."""
    text = (Path(__file__).parents[2] / "docs" / "javascript-client.md").read_text("utf-8")
    return re.findall(r"```(js|html)\n(.*?)```", text, re.DOTALL)


def test_the_documented_examples_run(service, page_server, browser):
    examples = _documented_examples()
    assert len(examples) >= 6
    # As the docs say: a page on an allowed origin, against the service on port 8089
    # with authentication off; nothing on the page's origin answers /token.
    instance = _start(service, page_server)
    # Errors the page throws, and the id of each message its EventSource receives.
    catch = ("<script>window.pageErrors = []; window.delivered = [];"
             "addEventListener('error', (e) => pageErrors.push(String(e.message)));"
             "addEventListener('unhandledrejection', (e) => pageErrors.push(String(e.reason)));"
             "window.EventSource = class extends EventSource { constructor(url, options) {"
             "  super(url, options);"
             "  this.addEventListener('message', (e) => delivered.push(e.lastEventId)); } };"
             "</script>")
    for number, (kind, code) in enumerate(examples):
        code = code.replace("http://localhost:8089", instance.base_url)
        page = (f"<!doctype html><meta charset='utf-8'>{catch}{code}" if kind == "html" else
                f"<!doctype html><meta charset='utf-8'>{catch}"
                f"<script src='{instance.base_url}/static/pushservice.js'></script>"
                f"<script>{code}</script>")
        page_server.add(f"/example{number}", page)
        browser.open(page_server.url(f"/example{number}"))
        wait_until(lambda: instance.open_connections() == 1, 10,
                   message=lambda number=number, code=code: (
                       f"example {number} to open its stream:\n{code}\n"
                       f"errors: {browser.evaluate('pageErrors')}"))
        response = instance.publish({"type": "progress", "service": "knowledge-service",
                                     "target": {"user_id": "123"},
                                     "data": {"progress": 65, "message": "正在生成向量嵌入..."},
                                     "metadata": {"require_ack": True}})
        assert response.status_code == 202
        event_id = response.json()["event_id"]
        browser.wait_for(f"delivered.includes('{event_id}')", 10,
                         what=f"example {number} to receive a message")
        assert browser.evaluate("pageErrors") == [], f"example {number}:\n{code}"
        browser.open("about:blank")
        wait_until(lambda: instance.open_connections() == 0, 10,
                   message=f"example {number} to let its stream go")
