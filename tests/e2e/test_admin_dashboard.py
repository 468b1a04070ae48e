"""The admin dashboard (/admin/) in headless Chromium, against two real instances sharing
one Redis, authentication on: who gets it, its figures moving as streams open and messages
flow, the kick button, the live tail and the test message form. Screenshots of the whole
page and of each panel, on a laptop and on a phone, go to test-artifacts/admin-dashboard/
(ignored by git) for people to look at."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from pushservice.auth import build_claims, mint_token
from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser

SECRET = "e2e-admin-dashboard-0123456789abcdef0123456789abcdef"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "admin-dashboard"
PANELS = ("panel-overview", "panel-connections-chart", "panel-rates", "panel-latency",
          "panel-success", "panel-stream", "panel-health", "panel-connections",
          "panel-tail", "panel-send")
VIEWPORTS = {"laptop": (1366, 900), "phone": (390, 844)}


def _token(subject: str, **claims) -> str:
    return mint_token(build_claims(subject, **claims), SECRET)


ADMIN = _token("ops-alice", roles=["admin"])
WATCHER = _token("watcher", subscribe=["*"])
PUBLISHER = _token("knowledge-service", service="knowledge-service", publish=["*"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def cluster(service):
    """Two instances of two workers each, sharing one Redis database."""
    env = {"ENABLE_AUTH": "true", "JWT_SECRET": SECRET, "HEARTBEAT_INTERVAL": "300"}
    alpha = service(INSTANCE_NAME="alpha", **env)
    beta = service(redis_url=alpha.redis_url, INSTANCE_NAME="beta", **env)
    return alpha, beta


def _stream(instance, path: str):
    client = instance.sse(path, headers=_bearer(WATCHER))
    greeting = client.wait_for(lambda frame: frame.event == "connected", 10).json()
    return client, greeting


def _publish(instance, target: dict, data: dict, type_: str = "progress") -> str:
    response = instance.publish({"type": type_, "service": "knowledge-service",
                                 "target": target, "data": data},
                                headers=_bearer(PUBLISHER))
    assert response.status_code == 202, response.text
    return response.json()["event_id"]


# -- who gets it ----------------------------------------------------------------------------


def test_only_an_admin_gets_the_page_and_its_event_stream(cluster):
    alpha, _ = cluster
    anonymous = alpha.get("/admin/")
    assert anonymous.status_code == 401
    assert anonymous.headers["Content-Type"].startswith("text/html")
    assert 'id="sign-in"' in anonymous.text and "dashboard.js" not in anonymous.text

    user = _bearer(WATCHER)
    refused_page = alpha.get("/admin/", headers=user)
    assert refused_page.status_code == 403 and "dashboard.js" not in refused_page.text
    for path in ("/admin/events", "/admin/connections", "/admin/instances"):
        response = alpha.get(path, headers=user)
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "admin_required"
    assert alpha.get("/admin/events").json()["error"]["code"] == "missing_token"
    with alpha.sse("/admin/events", headers=user) as refused_stream:
        assert refused_stream.status == 403
        assert refused_stream.json()["error"]["code"] == "admin_required"

    no_cookie = alpha.post("/admin/session", headers=user)
    assert no_cookie.status_code == 403 and "Set-Cookie" not in no_cookie.headers
    signed_in = alpha.post("/admin/session", headers=_bearer(ADMIN))
    assert signed_in.status_code == 204
    cookie = signed_in.headers["Set-Cookie"]
    assert "Path=/admin/" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session_cookie = {"Cookie": f"pushservice_token={ADMIN}"}
    with alpha.sse("/admin/events", headers=session_cookie) as stream:
        assert stream.status == 200
        hello = stream.wait_for(lambda frame: frame.event == "hello", 5).json()
        assert hello["viewer"] == "ops-alice" and hello["auth"] is True
        figures = stream.wait_for(lambda frame: frame.event == "figures", 5).json()
        assert set(figures["connections"]["by_instance"]) <= {"alpha", "beta"}
    elsewhere = alpha.get("/admin/events", headers={**session_cookie,
                                                    "Origin": "http://evil.example"})
    assert elsewhere.status_code == 403
    assert elsewhere.json()["error"]["code"] == "cross_origin_cookie"


# -- the dashboard in a browser ---------------------------------------------------------------


class Page:
    """The dashboard as a browser shows it."""

    def __init__(self, browser) -> None:
        self.browser = browser
        self.driver = browser.driver

    def find(self, selector: str):
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        return self.browser.evaluate(
            "(document.querySelector(arguments[0]) || {}).textContent || ''", selector)

    def tile(self, name: str) -> str:
        return self.text(f"#tile-{name} .value").strip()

    def number(self, name: str) -> float | None:
        value = self.tile(name).split(" ")[0].replace(",", "")
        try:
            return float(value)
        except ValueError:
            return None

    def click(self, selector: str):
        """Click what ``selector`` finds, scrolled to the middle of the window (the page's
        header stays at the top of it)."""
        element = self.find(selector)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()
        return element

    def fill(self, selector: str, text: str) -> None:
        field = self.find(selector)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
        field.clear()
        field.send_keys(text)

    def tail_ids(self) -> list[str]:
        return self.browser.evaluate(
            "[...document.querySelectorAll('#tail li')].map((li) => li.dataset.eventId)")

    def screenshots(self, viewport: str) -> None:
        """The whole page and each panel, at ``viewport``'s width."""
        folder = ARTIFACTS / viewport
        folder.mkdir(parents=True, exist_ok=True)
        width, height = VIEWPORTS[viewport]
        self.driver.set_window_size(width, height)
        self.browser.wait_for("document.querySelector('#live').textContent === 'live'", 10)
        for panel in PANELS:
            element = self.find(f"#{panel}")
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})",
                                       element)
            element.screenshot(str(folder / f"{panel}.png"))
        self.driver.execute_script("window.scrollTo(0, 0)")
        full = self.browser.evaluate("document.documentElement.scrollHeight")
        self.driver.set_window_size(width, full)
        self.browser.wait_for("document.querySelector('#live').textContent === 'live'", 10)
        self.driver.save_screenshot(str(folder / "page.png"))
        self.driver.set_window_size(width, height)


@pytest.mark.timeout(120)
def test_the_dashboard_follows_the_deployment_live(cluster, browser):
    alpha, beta = cluster
    page = Page(browser)
    browser.driver.set_window_size(*VIEWPORTS["laptop"])
    browser.open(alpha.url("/admin/"))

    # The sign-in form: a token without the admin role is refused, an admin's accepted.
    page.fill("#sign-in textarea[name=token]", WATCHER)
    page.click("#sign-in button[type=submit]")
    browser.wait_for("document.querySelector('#sign-in output').textContent"
                     ".includes('admin role')", 10, what="the refusal")
    page.fill("#sign-in textarea[name=token]", ADMIN)
    page.click("#sign-in button[type=submit]")
    browser.wait_for("document.querySelector('#live') && "
                     "document.querySelector('#live').textContent === 'live'", 15,
                     what="the dashboard, live")
    assert "ops-alice" in page.text("#viewer")
    browser.console()  # what the sign-in form logged (its 401 and 403) is behind us
    wait_until(lambda: page.number("connections") is not None, 10, message="a first figure")
    before = page.number("connections")

    # Streams open on both instances: the figures follow.
    opened = [_stream(alpha, "/sse/user/dash-1") for _ in range(2)]
    opened += [_stream(beta, "/sse/stream/dash-news") for _ in range(3)]
    try:
        wait_until(lambda: page.number("connections") == before + 5, 15, interval=0.2,
                   message=lambda: f"5 more connections, tile shows {page.tile('connections')}")
        legend = page.text("#legend-connections")
        assert "alpha" in legend and "beta" in legend

        # Messages flow: rates, latency, the stream's length, the tail.
        published = []
        for n in range(20):
            published.append(_publish(alpha, {"user_id": "dash-1"}, {
                "progress": n * 5, "message": "正在生成向量嵌入...", "stage": "embedding"}))
            published.append(_publish(beta, {"channel": "dash-news"}, {
                "headline": f"Release {n}", "status": "deployed"}, type_="info"))
        long_id = _publish(alpha, {"channel": "dash-news"}, {
            "report": [{"file": f"document-{n}.pdf", "chunks": n} for n in range(30)]},
            type_="success")
        wait_until(lambda: (page.number("publish") or 0) > 0
                   and (page.number("delivery") or 0) > 0, 15, interval=0.2,
                   message="publish and delivery rates above 0")
        wait_until(lambda: page.tile("latency") != "–" and (page.number("stream") or 0) >= 41,
                   15, interval=0.2, message="latency and the stream's length")
        assert page.tile("success") == "100 %"
        wait_until(lambda: set(published) | {long_id} <= set(page.tail_ids()), 15,
                   interval=0.2, message="every published message in the tail")
        first = browser.evaluate(
            "document.querySelector(`#tail li[data-event-id='${arguments[0]}'] pre`).textContent",
            published[0])
        assert json.loads(first)["data"]["message"] == "正在生成向量嵌入..."
        folded = browser.evaluate(
            "document.querySelector(`#tail li[data-event-id='${arguments[0]}'] details`)",
            long_id)
        assert folded is not None and not folded.get_property("open")

        # Instance health: both instances and their workers.
        wait_until(lambda: page.tile("health") == "2 / 2", 15, interval=0.2,
                   message="two healthy instances")
        assert browser.evaluate("document.querySelectorAll('#health-table tr.worker').length") == 4

        Select(page.find("#span")).select_by_value("60")  # the last minute: the test's
        page.screenshots("laptop")
        page.screenshots("phone")
        browser.driver.set_window_size(*VIEWPORTS["laptop"])

        # The tail filtered by topic.
        page.fill("#tail-form input[name=topic]", "dash-news")
        page.click("#tail-form button[type=submit]")
        hidden = _publish(alpha, {"user_id": "dash-1"}, {"progress": 100})
        shown = _publish(alpha, {"channel": "dash-news"}, {"headline": "filtered"}, "info")
        wait_until(lambda: shown in page.tail_ids(), 15, interval=0.2,
                   message="the filtered topic's message")
        assert hidden not in page.tail_ids()

        # Kick: the chosen stream is closed, and only that one.
        page.fill("#panel-connections input[name=topic]", "user:dash-1")
        page.click("#panel-connections button[type=submit]")
        (client, greeting), (other, _) = opened[0], opened[1]
        row = f"#connections-table tr[data-connection-id='{greeting['connection_id']}']"
        browser.wait_for(f"document.querySelectorAll('#connections-table tbody tr').length == 2"
                         f" && document.querySelector(\"{row}\")", 15, what="dash-1's streams")
        kick = page.click(f"{row} button.kick")
        assert kick.text == "Confirm"
        kick.click()
        closing = client.wait_for(lambda frame: frame.event == "closing", 10)
        assert closing.json()["reason"] == "closed_by_operator"
        browser.wait_for(f"!document.querySelector(\"{row}\")", 15, what="the row to go")
        assert other.wait_for(lambda frame: frame.event == "progress", 5)  # still open

        # A test message, published as the service itself.
        news = opened[2][0]
        page.fill("#send-form textarea[name=target]", '{"channel": "dash-news"}')
        page.fill("#send-form textarea[name=data]", '{"message": "hello from the dashboard"}')
        page.click("#send-form button[type=submit]")
        browser.wait_for("document.querySelector('#send-form output').textContent"
                         ".startsWith('Sent')", 10, what="the test message sent")
        frame = news.wait_for(lambda f: f.event == "info" and "dashboard" in f.data, 10)
        message = frame.json()
        assert message["service"] == "pushservice" and message["source"] == "admin-dashboard"
        wait_until(lambda: frame.id in page.tail_ids(), 10, interval=0.2,
                   message="the test message in the tail")
        assert not [line for line in browser.console() if "SEVERE" in line]
    finally:
        for client, _ in opened:
            client.close()
