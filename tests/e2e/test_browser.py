"""A real browser receives pushed messages through EventSource, written as the README and
docs/api.md show."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

# The two ways the README subscribes, verbatim, plus what the test reads back: each
# handler also records what it got and shows it on the page.
PAGE = """<!doctype html>
<html lang="zh">
<head><meta charset="utf-8"><title>pushservice in a browser</title></head>
<body>
<p>onmessage: <progress id="plain-bar" max="100"></progress> <span id="plain-text"></span></p>
<p>progress: <progress id="named-bar" max="100"></progress> <span id="named-text"></span></p>
<script>
const serviceUrl = __SERVICE_URL__;
const seen = window.seen = {plain: [], named: [], connected: {}, errors: []};

const es = new EventSource(serviceUrl + '/sse/user/123?named=0');
es.onmessage = e => {
  const msg = JSON.parse(e.data);
  seen.plain.push({lastEventId: e.lastEventId, type: e.type, msg});
  document.getElementById('plain-bar').value = msg.data.progress;
  document.getElementById('plain-text').textContent = msg.data.message;
};

const progressSource = new EventSource(serviceUrl + '/sse/user/123');
progressSource.addEventListener('progress', e => {
  const msg = JSON.parse(e.data);
  seen.named.push({lastEventId: e.lastEventId, type: e.type, msg});
  document.getElementById('named-bar').value = msg.data.progress;
  document.getElementById('named-text').textContent = msg.data.message;
});

// For the test only: know when both streams are subscribed, and see any failure.
for (const [name, source] of [['plain', es], ['named', progressSource]]) {
  source.addEventListener('connected', e => { seen.connected[name] = JSON.parse(e.data); });
  source.addEventListener('error', () => {
    seen.errors.push({stream: name, readyState: source.readyState});
  });
}
</script>
</body>
</html>
"""

MESSAGES = [
    {
        "type": "progress",
        "service": "knowledge-service",
        "target": {"user_id": "123"},
        "data": {"progress": 65, "message": "正在生成向量嵌入..."},
    },
    {
        "type": "progress",
        "service": "knowledge-service",
        "target": {"user_id": "123"},
        "data": {"progress": 100, "message": "处理完成：共 20 个分块 ✅"},
    },
]


def _show_page(service, page_server, browser, origins: list[str], **env: str):
    """A service allowing ``origins``, and the browser showing PAGE against it."""
    instance = service(CORS_ORIGINS=json.dumps(origins), **env)
    page_server.add("/", PAGE.replace("__SERVICE_URL__", json.dumps(instance.base_url)))
    browser.open(page_server.url("/"))
    return instance


def test_browser_eventsource_receives_progress_in_both_styles(service, page_server, browser):
    instance = _show_page(service, page_server, browser, [page_server.origin])
    connected = browser.wait_for(
        "seen.connected.plain && seen.connected.named && seen.connected",
        15,
        what="both EventSources to receive their 'connected' event",
    )
    assert connected["plain"]["connection_id"] != connected["named"]["connection_id"]

    for message in MESSAGES:
        response = instance.publish(message)
        assert response.status_code == 202, response.text
        assert response.headers["Content-Type"].startswith("application/json")

    seen = browser.wait_for(
        f"seen.plain.length >= {len(MESSAGES)} && seen.named.length >= {len(MESSAGES)} && seen",
        15,
        what=f"{len(MESSAGES)} messages on both EventSources",
    )

    # onmessage gets every message as a plain 'message' event; the listener gets 'progress'.
    assert [m["type"] for m in seen["plain"]] == ["message"] * len(MESSAGES)
    assert [m["type"] for m in seen["named"]] == ["progress"] * len(MESSAGES)
    for received in (seen["plain"], seen["named"]):
        assert [m["msg"]["data"] for m in received] == [m["data"] for m in MESSAGES]
        assert [m["msg"]["type"] for m in received] == ["progress", "progress"]
        assert [m["msg"]["target"]["user_id"] for m in received] == ["123", "123"]
        assert all(m["msg"]["service"] == "knowledge-service" for m in received)
        assert all(m["msg"]["id"] and m["msg"]["timestamp"] for m in received)
    # Both streams carry the same resumable event ids, and they are set.
    plain_ids = [m["lastEventId"] for m in seen["plain"]]
    assert plain_ids == [m["lastEventId"] for m in seen["named"]]
    assert all(plain_ids) and len(set(plain_ids)) == len(plain_ids)
    assert seen["errors"] == []

    # What the user sees on the page: the last progress and its Chinese text, intact.
    assert browser.evaluate("document.getElementById('plain-text').textContent") == (
        "处理完成：共 20 个分块 ✅"
    )
    assert browser.evaluate("document.getElementById('named-text').textContent") == (
        "处理完成：共 20 个分块 ✅"
    )
    assert browser.evaluate("document.getElementById('named-bar').value") == 100


def test_browser_on_another_origin_is_refused_without_cors(service, page_server, browser):
    _show_page(service, page_server, browser, ["http://127.0.0.1:1"])

    # The browser refuses the stream (CORS) and reports an error on both EventSources.
    errors = browser.wait_for(
        "new Set(seen.errors.map(e => e.stream)).size == 2 && seen.errors",
        15,
        what="both EventSources to fail",
    )
    assert {e["stream"] for e in errors} == {"plain", "named"}
    assert browser.evaluate("seen.connected") == {}


def test_a_closed_eventsource_and_a_left_page_free_their_connections(service, page_server,
                                                                     browser):
    # Heartbeats far apart and nothing published: only the hang-up itself can tell.
    instance = _show_page(service, page_server, browser, [page_server.origin],
                          HEARTBEAT_INTERVAL="300")
    browser.wait_for("seen.connected.plain && seen.connected.named", 15,
                     what="both EventSources to receive their 'connected' event")

    def until_open(count: int) -> None:
        wait_until(lambda: instance.open_connections() == count, 10,
                   message=lambda: f"{count} open, not {instance.open_connections()}")

    until_open(2)
    browser.run("es.close()")
    until_open(1)
    # The user closes the tab (a page only navigated away from may stay in the
    # back/forward cache, stream and all).
    driver = browser.driver
    page_tab = driver.current_window_handle
    driver.switch_to.new_window("tab")
    other_tab = driver.current_window_handle
    driver.switch_to.window(page_tab)
    driver.close()
    driver.switch_to.window(other_tab)
    until_open(0)


def _documented_example(containing: str, page: str = "docs/api.md") -> str:
    """The JavaScript example of ``page`` that contains ``containing``, verbatim."""
    text = (Path(__file__).parents[2] / page).read_text(encoding="utf-8")
    (example,) = [block for block in re.findall(r"```js\n(.*?)```", text, re.DOTALL)
                  if containing in block]
    return example


def test_the_readme_page_closes_its_stream_when_left_and_resumes_on_return(
        service, page_server, browser):
    instance = service(CORS_ORIGINS=json.dumps([page_server.origin]), HEARTBEAT_INTERVAL="300")
    example = _documented_example("pagehide").replace("http://localhost:8089",
                                                      instance.base_url)
    hooks = ("window.shown = [];\n"
             "addEventListener('pageshow', (e) => { window.restored = e.persisted; });\n")
    # The example's own show() renders; the test's records what it was given.
    record = "\nshow = (m) => shown.push(m.data.n);\n"
    page_server.add("/", f"<!doctype html><meta charset='utf-8'><script>\n{hooks}{example}"
                         f"{record}</script>")
    page_server.add("/other", "<!doctype html><p>another page</p>")

    def publish(n: int) -> None:
        response = instance.publish({"type": "progress", "service": "knowledge-service",
                                     "target": {"user_id": "123"}, "data": {"n": n}})
        assert response.status_code == 202, response.text

    browser.open(page_server.url("/"))
    browser.wait_for("lastEventId !== ''", 15, what="the stream's 'connected' event")
    publish(1)
    browser.wait_for("shown.length == 1", 15, what="the first message")

    # Away and back three times, a message published each time while away: every one
    # is shown on return (each resume continues from the last id, never from scratch).
    for away in (2, 3, 4):
        browser.run("window.restored = undefined")
        browser.open(page_server.url("/other"))
        wait_until(lambda: instance.open_connections() == 0, 10,
                   message="the page left behind to give up its stream")
        publish(away)
        browser.driver.back()
        browser.wait_for("window.restored !== undefined", 15, what="the page to show again")
        # The page is served so that it may enter the back/forward cache (no ``no-store``)
        # and it closes its stream when left: the browser must restore it, not reload it.
        assert browser.evaluate("window.restored"), (
            "the browser reloaded the page instead of restoring it from its back/forward "
            "cache")
        assert browser.wait_for(f"shown.length >= {away} && shown", 15,
                                what="the message published while away") == list(
                                    range(1, away + 1))
        wait_until(lambda: instance.open_connections() == 1, 10,
                   message="the restored page's one stream")
    assert instance.open_connections() == 1
