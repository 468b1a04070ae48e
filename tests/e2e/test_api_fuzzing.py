"""The running service against its own OpenAPI document, fuzzed by schemathesis.

gunicorn with gevent workers and a real redis-server, authentication on; schemathesis
(its command line, in its own process) reads /openapi.json from the service and sends
generated requests, valid and invalid, to every operation with the token of the role
the endpoint is for (tests/e2e/api_fuzzing_hooks.py). It checks that nothing answers
5xx, that every answer's status, content type, headers and body are the ones the
document gives, that invalid requests are refused and that secured endpoints refuse
requests without a token. The run is bounded (FUZZ_MAX_SECONDS, 90 s by default) and
repeatable (FUZZ_SEED); a failure shows schemathesis's report, with a curl command per
failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SECRET = "fuzzing-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
MAX_SECONDS = int(os.environ.get("FUZZ_MAX_SECONDS", "90"))
SEED = os.environ.get("FUZZ_SEED", "20261128")
# Answers that count as refusing an invalid request: schemathesis's list, plus 408 and 413
# (a body too slow or too large is refused before it is read).
REFUSALS = [400, 401, 403, 404, 405, 406, 408, 409, 413, 415, 422, 428, 429]
CONFIG = f"""
[checks.negative_data_rejection]
expected-statuses = {REFUSALS}
"""
# Every check of single requests; the stateful ones need links between operations, and
# the document cannot promise that every valid message is accepted (the distinct topics
# of a target and the stored size are limited too), so positive_data_acceptance is out.
EXCLUDED_CHECKS = "positive_data_acceptance,use_after_free,ensure_resource_availability"


def schemathesis_command() -> list[str]:
    script = Path(sys.executable).parent / "schemathesis"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "schemathesis.cli"]


@pytest.mark.timeout(MAX_SECONDS + 90)
def test_the_service_answers_as_its_openapi_document_says(service, tmp_path):
    instance = service(ENABLE_AUTH="true", JWT_SECRET=SECRET, HEARTBEAT_INTERVAL="5")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    env = {name: value for name, value in os.environ.items()
           if name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update(FUZZ_JWT_SECRET=SECRET, SCHEMATHESIS_HOOKS="api_fuzzing_hooks",
               PYTHONPATH=str(HERE), NO_COLOR="1")
    command = [
        *schemathesis_command(), "--config-file", str(config), "run",
        instance.url("/openapi.json"),
        "--checks", "all", "--exclude-checks", EXCLUDED_CHECKS,
        "--phases", "examples,coverage,fuzzing", "--max-examples", "25",
        # One worker (the default): Python 3.11's ast module is not thread-safe, and
        # hypothesis parses lambdas with it when schemathesis runs workers in threads.
        "--max-time", str(MAX_SECONDS), "--seed", SEED,
        "--request-timeout", "5", "--output-truncate", "true",
    ]
    result = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=MAX_SECONDS + 60, stdin=subprocess.DEVNULL)
    report = result.stdout[-20000:] + result.stderr[-5000:]
    assert result.returncode == 0, report
    assert "Operations:" in result.stdout and "Tested:" in result.stdout, report
