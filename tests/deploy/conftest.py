"""Fixtures of the deployment tests (tests/deploy).

These tests read files; nothing is deployed. The Kubernetes manifests are checked against
the Kubernetes schemas that the kubernetes-validate package ships (offline), the alert
rules with promtool, the compose files and the Dockerfile by their structure (there is no
Docker engine to run them). Helpers are in ``tests.deploy.deployfiles``.

- ``promtool``: the path of promtool (Debian's prometheus package). Tests that use it are
  marked ``needs_promtool``, so scripts/ensure-test-deps installs it before the first
  test when it is missing; still missing, the test fails in CI and is skipped elsewhere.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.prerequisites import missing

PROMTOOL_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool, found on PATH."""
    path = shutil.which("promtool")
    if path is None:
        missing("promtool (Debian's prometheus package; scripts/ensure-test-deps installs it)")
    return path


@pytest.fixture
def run_promtool(promtool: str) -> Callable[..., subprocess.CompletedProcess]:
    """``run_promtool(*args, cwd=folder)``: promtool's result, its output as text."""

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True,
                              timeout=PROMTOOL_TIMEOUT, stdin=subprocess.DEVNULL, check=False)

    return run
