"""The reference tables of docs/ say what the code does: every setting with its default,
every error code under its status. A setting or a code added without its row fails here."""

from __future__ import annotations

import dataclasses
import re

import pytest

from pushservice.settings import Settings
from pushservice.web.http_errors import GUNICORN_CODES
from pushservice.web.openapi_schemas import ERROR_CODES
from tests.support.gunicorn_server import REPO_ROOT

pytestmark = pytest.mark.unit

CONFIGURATION = REPO_ROOT / "docs" / "configuration.md"
API = REPO_ROOT / "docs" / "api.md"
# Settings that are not read from a variable of their own name.
DERIVED = {"redis_configured"}
# Variables that make up another setting (REDIS_URL, when it is not given whole).
PARTS = {"REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB"}
# Defaults the table states in words, where the value depends on the machine.
IN_WORDS = {"workers": "CPU count", "instance_name": "<host>-<port>",
            "prometheus_multiproc_dir": "a fresh temporary folder",
            "advertise_host": "this host's address", "cors_origins": '["http://localhost:3000"]',
            "jwt_algorithms": "HS256"}


def _rows(path, first_column: str) -> dict[str, list[str]]:
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(first_column, cells[0]):
            rows[cells[0]] = cells[1:]
    return rows


def _settings() -> list[dataclasses.Field]:
    return [field for field in dataclasses.fields(Settings)
            if field.name not in DERIVED and not field.name.startswith("_")]


def test_the_configuration_table_lists_every_setting_with_its_default():
    rows = {name.strip("`"): cells for name, cells in _rows(CONFIGURATION, r"`[A-Z_]+`").items()}
    documented = set(rows)
    variables = {field.name.upper() for field in _settings()}
    settings_source = (REPO_ROOT / "pushservice" / "settings.py").read_text()
    assert all(f'"{part}"' in settings_source for part in PARTS)
    documented -= PARTS
    assert variables - documented == set(), "settings missing from docs/configuration.md"
    assert documented - variables == set(), "documented variables the service does not read"
    for field in _settings():
        shown = rows[field.name.upper()][0].strip("`")
        if field.name in IN_WORDS:
            assert shown == IN_WORDS[field.name], field.name
            continue
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory())  # type: ignore[misc]
        if isinstance(default, bool):
            expected = {str(default).lower()}
        elif isinstance(default, float) and default.is_integer():
            expected = {str(int(default)), str(default)}
        elif isinstance(default, (tuple, list)):
            expected = {",".join(map(str, default)), ""}
        else:
            expected = {str(default)}
        assert shown in expected, f"{field.name.upper()}: documented {shown!r}, is {default!r}"


def test_the_error_table_lists_every_code_under_its_status():
    table = set()
    for line in API.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*(\d{3})\s*\|\s*`([a-z_]+)`\s*\|", line)
        if match:
            table.add((int(match.group(1)), match.group(2)))
    expected = {(status, code) for status, codes in ERROR_CODES.items() for code in codes}
    expected |= {(status, code) for status, code in GUNICORN_CODES.items()}
    assert expected - table == set(), "codes missing from the error table of docs/api.md"
    assert table - expected == set(), "codes in docs/api.md that the service never answers"
