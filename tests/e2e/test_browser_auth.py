"""A real browser passes tokens the ways docs/security.md shows: the HttpOnly cookie with a
credentialed EventSource, ``?token=``, and a fresh token after ``closing: token_expired``."""

from __future__ import annotations

import json

import pytest

from pushservice.auth import build_claims, mint_token

pytestmark = pytest.mark.browser

SECRET = "e2e-browser-0123456789abcdef0123456789abcdef"

# The recipes of docs/security.md, plus what the test reads back.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tokens in a browser</title></head>
<body><script>
const base = __SERVICE_URL__;
const bearer = __BEARER__;
// The page's own backend hands out tokens: a short-lived one first, then a longer one.
let tokensFetched = 0;
const getToken = () => fetch('/token?n=' + (tokensFetched++)).then(r => r.text());
const seen = window.seen = {cookie: [], query: [], closing: [], connected: 0, errors: [],
                            cookieStatus: null, cookieVisible: null, refused: null};

// 1. Trade the bearer token for an HttpOnly cookie; EventSource sends it by itself.
fetch(base + '/api/v1/auth/cookie', {
  method: 'POST', credentials: 'include', headers: {Authorization: 'Bearer ' + bearer},
}).then(response => {
  seen.cookieStatus = response.status;
  seen.cookieVisible = document.cookie;   // HttpOnly: invisible to scripts
  const source = new EventSource(base + '/sse/user/123', {withCredentials: true});
  source.addEventListener('connected', () => { seen.connected += 1; });
  source.addEventListener('progress', e => seen.cookie.push(JSON.parse(e.data).data.n));
  source.addEventListener('error', () => seen.errors.push('cookie'));
});

// 2. ?token=, reconnecting with a fresh token (and the last event id) when it expires.
async function connect(lastEventId) {
  const url = new URL('/sse/user/123', base);
  url.searchParams.set('token', await getToken());
  if (lastEventId) url.searchParams.set('last_event_id', lastEventId);
  const source = new EventSource(url);
  source.addEventListener('connected', () => { seen.connected += 1; });
  source.addEventListener('progress', e => seen.query.push(JSON.parse(e.data).data.n));
  source.addEventListener('closing', e => {
    const reason = JSON.parse(e.data).reason;
    seen.closing.push(reason);
    if (reason === 'token_expired') {
      source.close();
      connect(e.lastEventId);
    }
  });
}
connect(null);

// 3. An expired token is refused: the EventSource fails instead of opening.
const refused = new EventSource(base + '/sse/user/123?token=' + __EXPIRED__);
refused.addEventListener('error', () => { seen.refused = refused.readyState; });
</script></body></html>
"""


def _token(ttl: float, **grants) -> str:
    return mint_token(build_claims("123", ttl_seconds=ttl, **grants), SECRET)


def test_browser_streams_with_the_cookie_and_with_refreshed_query_tokens(
        service, page_server, browser):
    instance = service(ENABLE_AUTH="true", JWT_SECRET=SECRET, JWT_LEEWAY_SECONDS="0",
                       CORS_ORIGINS=json.dumps([page_server.origin]))
    page = (PAGE.replace("__SERVICE_URL__", json.dumps(instance.base_url))
            .replace("__BEARER__", json.dumps(_token(600)))
            .replace("__EXPIRED__", json.dumps(_token(-60))))
    page_server.add("/", page)
    # Minted when the page asks, as a real backend does: a slow browser start cannot
    # spend the short token's life before it is used.
    lifetimes = iter([3, 600])
    page_server.add("/token", lambda: _token(next(lifetimes, 600)), "text/plain")
    publisher = {"Authorization": "Bearer " + mint_token(build_claims(
        "knowledge-service", service="knowledge-service", publish=["user:*"]), SECRET)}

    def publish(n: int) -> None:
        response = instance.publish({"type": "progress", "service": "knowledge-service",
                                     "target": {"user_id": "123"}, "data": {"n": n}},
                                    headers=publisher)
        assert response.status_code == 202, response.text

    browser.open(page_server.url("/"))
    browser.wait_for("seen.connected >= 2", 15, what="both streams to connect")
    assert browser.evaluate("seen.cookieStatus") == 204
    assert "pushservice_token" not in browser.evaluate("seen.cookieVisible")
    publish(1)
    browser.wait_for("seen.cookie.length >= 1 && seen.query.length >= 1", 10,
                     what="the first message on both streams")
    # The short-lived token expires; the page reconnects with the next one.
    browser.wait_for("seen.closing.includes('token_expired')", 10, what="token expiry")
    publish(2)
    browser.wait_for("seen.connected >= 3 && seen.query.length >= 2 && seen.cookie.length >= 2",
                     10, what="the second message after the reconnect")
    publish(3)
    seen = browser.wait_for("seen.query.length >= 3 && seen.cookie.length >= 3 && seen", 10,
                            what="the third message")
    assert seen["query"] == [1, 2, 3] and seen["cookie"] == [1, 2, 3]
    assert seen["errors"] == []
    assert seen["refused"] == 2  # EventSource.CLOSED: refused, not retried as anonymous
