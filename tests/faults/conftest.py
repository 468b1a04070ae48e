"""The fault suite: each test breaks something real (a worker, Redis, an instance, the
network to Redis) under load and records what users saw in ``figures``; the figures are
printed at the end of the run and written to var/fault-figures.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIGURES_FILE = Path(__file__).resolve().parents[2] / "var" / "fault-figures.json"
_recorded: dict[str, dict] = {}


@pytest.fixture
def figures(request):
    """``figures(name=value, ...)`` records what this test measured."""
    def record(**values) -> None:
        _recorded.setdefault(request.node.nodeid.split("::", 1)[1], {}).update(values)

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not _recorded:
        return
    terminalreporter.section("fault suite figures")
    for test, values in _recorded.items():
        shown = ", ".join(f"{name}={value}" for name, value in values.items())
        terminalreporter.write_line(f"{test}: {shown}")
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps(_recorded, indent=1, sort_keys=True) + "\n")
