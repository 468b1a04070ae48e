"""Every code block of docs/python-client.md, and of the README's "Publishing from
Python", runs as written against the service.

Blocks run in order, each in its own process, against one instance with authentication
off, as ``make run`` serves it: ``PUSHSERVICE_URL`` points at the instance, and the
literal ``http://localhost:8089`` of the blocks is read as the instance's address. The
install command is left out (the suite runs on the installed package), and the
benchmark runs for half a second instead of 10.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gunicorn_server import REPO_ROOT

pytestmark = pytest.mark.e2e

GUIDE = REPO_ROOT / "docs" / "python-client.md"
BLOCK = re.compile(r"^```(python|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)


README = REPO_ROOT / "README.md"


def _blocks(text: str | None = None) -> list[tuple[str, str]]:
    return [(kind, text) for kind, text in BLOCK.findall(text or GUIDE.read_text())
            if "pip install" not in text]


def _readme_section() -> str:
    text = README.read_text()
    start = text.index("## Publishing from Python\n")
    return text[start:text.index("\n## ", start + 1)]


def test_the_guide_shows_the_original_example_as_written():
    from .test_end_to_end import CLIENT_EXAMPLE, SPEC_EXAMPLE

    text = GUIDE.read_text()
    assert SPEC_EXAMPLE.strip() in text
    assert CLIENT_EXAMPLE.strip().split("\n\n")[-1] in text


def test_the_readme_shows_the_original_example_as_written():
    from .test_end_to_end import SPEC_EXAMPLE

    assert SPEC_EXAMPLE.strip() in _readme_section()


@pytest.mark.timeout(120)
def test_every_block_of_the_guide_runs(publisher_service):
    _run_blocks(publisher_service.base_url, _blocks())


@pytest.mark.timeout(60)
def test_every_python_block_of_the_readme_section_runs(publisher_service):
    _run_blocks(publisher_service.base_url, _blocks(_readme_section()), at_least=3)


def _run_blocks(url: str, blocks: list[tuple[str, str]], at_least: int = 10) -> None:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PUSHSERVICE_", "JWT_"))}
    env.update(PUSHSERVICE_URL=url, PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    assert len(blocks) >= at_least
    for number, (kind, text) in enumerate(blocks, 1):
        text = text.replace("http://localhost:8089", url).replace("--seconds 10",
                                                                  "--seconds 0.5")
        argv = [sys.executable, "-c", text] if kind == "python" else ["bash", "-ec", text]
        done = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, (
            f"block {number} ({kind}) failed:\n{text}\n--- stdout\n{done.stdout}"
            f"\n--- stderr\n{done.stderr}")
