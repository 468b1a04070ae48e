"""Every code block of the README and of docs/ runs as written, or says why it cannot.

Blocks are read in order from README.md and docs/*.md. Each one, by its language:

- ``sh``: run with bash against a running service (gunicorn with gevent workers, a real
  Redis, authentication off: what ``make run`` serves), ``localhost:8089`` read as its
  address, from the repository's root (so ``.venv/bin/python`` is the project's);
- ``python``: run with the project's interpreter against the same service
  (``PUSHSERVICE_URL`` points at it);
- ``js`` and ``html``: loaded in headless Chromium on a page of another origin (listed in
  the service's CORS_ORIGINS); it must raise nothing, and a block that opens a stream
  must be holding one open on the service;
- ``json`` and ``yaml``: parsed; a JSON message (it has ``type`` and ``service``) must be
  one the service accepts;
- ``text`` and ``http``: wire formats and diagrams, read by people only.

A comment just before a block changes that: ``<!-- output -->`` (what a command prints),
``<!-- not run: why -->`` (a block that cannot run here, and why: starting the service
in the foreground, needing Docker or a download), ``<!-- test: streams -->`` (a command
that streams until Ctrl-C: it runs for two seconds, then is stopped). A block in no
known language, or a marker without its reason, fails. Pages whose blocks other tests
run as written are listed in RUN_ELSEWHERE with those tests.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pushservice.message import MessageFactory
from tests.support.gunicorn_server import PASSED_THROUGH, REPO_ROOT
from tests.support.page_server import PageServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

# Pages whose every block another test runs as written.
RUN_ELSEWHERE = {
    "docs/python-client.md": "tests/client/test_docs.py",
    "docs/javascript-client.md": "tests/e2e/test_js_client.py",
    "docs/deployment.md": "tests/deploy/test_docs.py",
    "docs/monitoring.md": "tests/deploy/test_docs.py",
}
PAGES = ["README.md", *sorted(str(path.relative_to(REPO_ROOT))
                              for path in (REPO_ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([A-Za-z]*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!--\s*(output|not run:\s*(\S.*?)|test:\s*streams)\s*-->\s*\Z")
RUNNABLE = {"sh", "python", "js", "html", "json", "yaml"}
READ_ONLY = {"text", "http"}
MESSAGE_FIELDS = {"id", "timestamp", "type", "service", "source", "target", "data", "metadata"}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    language: str
    text: str
    marker: str | None  # "output", "not run", "streams" or None
    reason: str | None

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}:{self.language}"


def _blocks(page: str) -> list[Block]:
    text = (REPO_ROOT / page).read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        kind = reason = None
        if marker:
            kind = ("output" if marker.group(1) == "output" else
                    "streams" if marker.group(1).startswith("test") else "not run")
            reason = marker.group(2)
        blocks.append(Block(page, text[:match.start()].count("\n") + 1, match.group(1),
                            match.group(2), kind, reason))
    return blocks


ALL_BLOCKS = [block for page in PAGES if page not in RUN_ELSEWHERE for block in _blocks(page)]
SH = [b for b in ALL_BLOCKS if b.language == "sh" and b.marker not in ("not run", "output")]
PYTHON = [b for b in ALL_BLOCKS if b.language == "python" and b.marker is None]
BROWSER = [b for b in ALL_BLOCKS if b.language in ("js", "html") and b.marker is None]
DATA = [b for b in ALL_BLOCKS if b.language in ("json", "yaml") and b.marker is None]


def test_every_block_says_what_it_is():
    assert len(ALL_BLOCKS) > 30
    for block in ALL_BLOCKS:
        assert block.language in RUNNABLE | READ_ONLY, (
            f"{block.name}: give the block a language ({', '.join(sorted(RUNNABLE | READ_ONLY))})")
        if block.marker == "not run":
            assert block.reason and len(block.reason) > 10, f"{block.name}: say why not"
        if block.marker == "output":
            assert block.language in ("json", "text"), f"{block.name}: output of what?"
        if block.marker == "streams":
            assert block.language == "sh", block.name
    for page, test in RUN_ELSEWHERE.items():
        assert (REPO_ROOT / test).is_file() and page in (REPO_ROOT / test).read_text() + (
            REPO_ROOT / "tests/deploy/deployfiles.py").read_text(), (page, test)


@pytest.fixture(scope="module")
def pages() -> PageServer:
    with PageServer() as server:
        yield server


@pytest.fixture(scope="module")
def target(service, pages):
    return service(ENABLE_AUTH="false", CORS_ORIGINS=json.dumps([pages.origin]),
                   PUBLISH_RATE_PER_SERVICE="0")


def _environ(url: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name in PASSED_THROUGH}
    env.update(PUSHSERVICE_URL=url, PYTHONPATH=str(REPO_ROOT / "clients/python/src"))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _localize(text: str, url: str) -> str:
    host = url.removeprefix("http://")
    return text.replace("http://localhost:8089", url).replace("localhost:8089", host)


# Runs a command as a terminal would: Ctrl-C (SIGINT) ends it, even when this test run
# inherited SIGINT ignored (started as a background job), which the block would inherit.
_IN_A_TERMINAL = [sys.executable, "-c", ("import os, signal, sys; "
                                         "signal.signal(signal.SIGINT, signal.SIG_DFL); "
                                         "os.execvp(sys.argv[1], sys.argv[1:])")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", SH, ids=[block.name for block in SH])
def test_shell_blocks_run(block: Block, target):
    script = _localize(block.text, target.base_url)
    process = subprocess.Popen([*_IN_A_TERMINAL, "bash", "-ec", script], cwd=REPO_ROOT,
                               env=_environ(target.base_url), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    if block.marker == "streams":
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        reader.start()
        try:
            # Until the stream's greeting is printed (the block may start other programs
            # first), then Ctrl-C, as whoever runs it would.
            wait_until(lambda: process.poll() is not None
                       or any("event: connected" in line for line in lines), 30,
                       message=lambda: f"{block.name} to print its greeting:\n{''.join(lines)}")
            assert process.poll() is None, f"{block.name} ended by itself:\n{''.join(lines)}"
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
            process.wait(timeout=20)
        finally:
            if process.poll() is None:  # never leave a stream open for the next test
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            reader.join(5)
        output = "".join(lines)
        assert "event: connected" in output, f"{block.name}:\n{output}"
        return
    output = process.communicate(timeout=100)[0]
    assert process.returncode == 0, f"{block.name} failed:\n{script}\n--- output\n{output}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("block", PYTHON, ids=[block.name for block in PYTHON])
def test_python_blocks_run(block: Block, target):
    done = subprocess.run([sys.executable, "-c", _localize(block.text, target.base_url)],
                          cwd=REPO_ROOT, env=_environ(target.base_url), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{block.name}:\n{done.stdout}\n{done.stderr}"


@pytest.mark.browser
@pytest.mark.timeout(90)
@pytest.mark.parametrize("block", BROWSER, ids=[block.name for block in BROWSER])
def test_browser_blocks_run(block: Block, target, pages, browser):
    code = _localize(block.text, target.base_url)
    # Errors the block raises, thrown or in a promise, are what the test reads back.
    catch = ("<script>window.failures = [];"
             "addEventListener('error', (e) => failures.push(String(e.message)));"
             "addEventListener('unhandledrejection', (e) => failures.push(String(e.reason)));"
             "</script>")
    body = code if block.language == "html" else f"<script>\n{code}\n</script>"
    if block.language == "js" and "PushService" in code:
        # Pages that use the JavaScript client load it first, as its guide says.
        body = f"<script src='{target.base_url}/static/pushservice.js'></script>\n{body}"
    path = f"/{block.page.replace('/', '-')}-{block.line}"
    pages.add(path, f"<!doctype html><meta charset='utf-8'>{catch}\n{body}")
    # The previous block's browser has quit: its streams are closed by now.
    wait_until(lambda: target.open_connections() == 0, 15, message="no stream left open")
    browser.open(pages.url(path))
    if "EventSource" in code or "connect(" in code:
        wait_until(lambda: target.open_connections() > 0, 15,
                   message=f"{block.name} to open its stream")
    else:
        time.sleep(1)
    assert browser.evaluate("window.failures") == [], block.name


@pytest.mark.parametrize("block", DATA, ids=[block.name for block in DATA])
def test_data_blocks_parse(block: Block):
    if block.language == "yaml":
        assert list(yaml.safe_load_all(block.text))
        return
    try:
        documents = [json.loads(block.text)]
    except json.JSONDecodeError:  # one document per line (several tokens' claims)
        documents = [json.loads(line) for line in block.text.splitlines() if line.strip()]
    factory = MessageFactory(message_ttl=3600, max_message_bytes=65536)
    for document in documents:
        if isinstance(document, dict) and {"type", "service"} <= set(document) <= MESSAGE_FIELDS:
            factory.build(document, broadcast="target" not in document)
