"""Every code block of the README's "Delivery confirmation" section and of
docs/delivery-confirmation.md, exercised against the service as ``make run`` serves it
(authentication off): the shell and Python blocks run as written, the JavaScript block in
Chromium, and the examples of answers and notices match what the service really sends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pushservice.confirmation import delivery_status
from pushservice.message import MessageFactory
from pushservice.ops.webhook import Webhook, notice_body
from pushservice.settings import Settings
from tests.support.gunicorn_server import REPO_ROOT
from tests.support.waiting import wait_until

README = REPO_ROOT / "README.md"
GUIDE = REPO_ROOT / "docs" / "delivery-confirmation.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _readme_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index("## Delivery confirmation\n")
    return BLOCK.findall(text[start:text.index("\n## ", start + 1)])


def _guide_blocks(kind: str) -> list[str]:
    return [code for language, code in BLOCK.findall(GUIDE.read_text()) if language == kind]


@pytest.fixture(scope="module")
def instance(service):
    return service()  # authentication off, as make run


def _run(argv: list[str], url: str) -> str:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PUSHSERVICE_", "JWT_"))}
    env.update(PUSHSERVICE_URL=url, PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, f"{argv}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done.stdout


def _json_documents(text: str) -> list:
    """The JSON documents printed one after another (curl adds no newline)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, at = decoder.raw_decode(text, at)
        found.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def test_the_readme_has_the_three_examples():
    assert [kind for kind, _ in _readme_blocks()] == ["sh", "js", "python"]


def test_the_readme_curl_example_publishes_shows_and_acknowledges(instance):
    ((_, code),) = [block for block in _readme_blocks() if block[0] == "sh"]
    address = instance.base_url.removeprefix("http://")
    output = _run(["bash", "-ec", code.replace("localhost:8089", address)], instance.base_url)
    published, status, acknowledged = _json_documents(output)
    assert published["id"] == "order-42-shipped" and published["duplicate"] is False
    assert status["state"] == "pending" and status["priority"] == "high"
    assert acknowledged["status"] == "acknowledged"
    assert instance.get("/api/v1/messages/order-42-shipped").json()["state"] == "acknowledged"


def test_the_readme_python_example_publishes_and_reads_the_status(instance):
    ((_, code),) = [block for block in _readme_blocks() if block[0] == "python"]
    output = _run([sys.executable, "-c", code.replace("http://localhost:8089",
                                                      instance.base_url)], instance.base_url)
    assert output.strip() == "pending 0 []"


@pytest.mark.browser
def test_the_readme_javascript_example_acknowledges_what_it_shows(service, page_server,
                                                                  browser):
    ((_, code),) = [block for block in _readme_blocks() if block[0] == "js"]
    instance = service(CORS_ORIGINS=json.dumps([page_server.origin]))
    page_server.add("/", f"<!doctype html><meta charset='utf-8'>"
                         f"<script src='{instance.base_url}/static/pushservice.js'></script>"
                         f"<script>{code.replace('http://localhost:8089', instance.base_url)}"
                         "</script>")
    browser.open(page_server.url("/"))
    wait_until(lambda: instance.open_connections() == 1, 10, message="the page's stream")
    response = instance.publish({"type": "info", "service": "orders",
                                 "target": {"user_id": "123"},
                                 "data": {"message": "Your order has shipped"},
                                 "metadata": {"require_ack": True}})
    message_id = response.json()["id"]
    wait_until(lambda: instance.get(f"/api/v1/messages/{message_id}").json()["state"]
               == "acknowledged", 15, message="the page to acknowledge the message")
    assert browser.evaluate("document.title") == "Your order has shipped"


def test_the_guides_message_is_valid_and_its_status_looks_as_shown(instance):
    message, status_example, notice_example = (json.loads(code)
                                               for code in _guide_blocks("json"))
    message["id"] = f"guide-{time.time_ns()}"
    response = instance.publish(message)
    assert response.status_code == 202, response.text
    real = instance.get(f"/api/v1/messages/{message['id']}").json()
    assert set(real) == set(status_example)
    assert set(real["users"][0]) == set(status_example["users"][0])
    record = {"id": "m", "service": "orders", "users": "123", "topics": "user:123",
              "body": json.dumps(notice_example["message"]), "created": "1", "expires": "2",
              "expired": "3", "webhook_attempts": "1", "written": "0", "redeliveries": "0"}
    assert set(notice_body(record)) == set(notice_example)
    assert set(delivery_status(record, 0)) == set(status_example)
    assert MessageFactory(3600, 65536).build(notice_example["message"]).ack is not None


def test_the_guides_notice_headers_are_those_sent():
    (headers_block,) = [code for code in _guide_blocks("http") if "Pushservice-Signature" in code]
    documented = {line.split(":")[0] for line in headers_block.splitlines()[1:] if ":" in line}
    settings = Settings(ack_webhook_url="http://127.0.0.1:9/x",
                        ack_webhook_secret="a-secret-of-sixteen-bytes")
    sent = {name.lower() for name, _ in Webhook(settings).request({"id": "m"}).header_items()}
    assert {name.lower() for name in documented} <= sent


def test_the_guides_receiver_accepts_a_genuine_notice_and_refuses_a_forged_one():
    (code,) = _guide_blocks("python")
    namespace: dict = {}
    exec(compile(code, str(GUIDE), "exec"), namespace)  # noqa: S102 - the guide's own code
    secret = "a-secret-of-sixteen-bytes"
    settings = Settings(ack_webhook_url="http://127.0.0.1:9/x", ack_webhook_secret=secret)
    request = Webhook(settings).request({"id": "m1", "unacknowledged": ["123"]})
    headers = dict(request.header_items())

    assert namespace["on_expiry_notice"](request.data, headers, secret) == 204
    forged = request.data.replace(b"m1", b"m2")
    assert namespace["on_expiry_notice"](forged, headers, secret) == 400
