"""What to do when a test needs something the machine lacks: skip locally, fail in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when running under CI (the CI environment variable is set to true or 1)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(what: str) -> NoReturn:
    """Give up on the current test because ``what`` is not available.

    In CI the test fails, so a machine that lacks a dependency cannot pass by skipping;
    elsewhere it is skipped with the same reason.
    """
    reason = f"missing prerequisite: {what}"
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
