"""The ``pushservice`` command line, run as users run it (the venv's console script,
in a subprocess) against the real service; and its tokens with authentication on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pushservice_client import AuthenticationError, PermissionDeniedError, PushClient
from pushservice_client.cli import build_parser
from pushservice_client.tokens import build_claims, decode_unverified, mint_hs256

from tests.support.prerequisites import missing
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

SECRET = "client-cli-0123456789abcdef0123456789abcdef"
COMMANDS = ("send", "tail", "token", "stats", "connections", "kick")


def _script() -> str:
    script = Path(sys.executable).parent / "pushservice"
    if not script.is_file():
        missing(f"the pushservice console script in {script.parent} "
                "(pip install -e ./clients/python, from requirements-dev.txt)")
    return str(script)


def _env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PUSHSERVICE_", "JWT_"))}
    env.update(extra)
    return env


def run(*args: str, url: str | None = None, stdin: str | None = None, timeout: float = 30,
        **env: str) -> subprocess.CompletedProcess:
    extra = {"PUSHSERVICE_URL": url} if url else {}
    return subprocess.run([_script(), *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=_env(**extra, **env), check=False)


def test_every_command_explains_itself():
    overview = run("--help")
    assert overview.returncode == 0
    assert "PUSHSERVICE_TOKEN" in overview.stdout
    parser = build_parser()
    subcommands = next(action for action in parser._actions if action.dest == "command")
    for command in COMMANDS:
        assert command in overview.stdout
        text = subcommands.choices[command].format_help()
        assert text.startswith("usage: pushservice " + command), text
    assert "examples:" in subcommands.choices["send"].format_help()


def test_send_one_message_from_flags_prints_its_result(publisher_service):
    done = run("send", "--service", "knowledge-service", "--type", "progress",
               "--target", "task_id=cli-1", "--data", "progress=65",
               "--data", "message=处理进度: 65%", url=publisher_service.base_url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["topics"] == ["task:cli-1", "service:knowledge-service"]
    assert result["duplicate"] is False and result["event_id"]


def test_send_a_file_from_stdin_batches_and_reports_each_line(publisher_service):
    lines = [json.dumps({"type": "info", "target": {"channel": "cli-file"},
                         "data": {"n": n}}) for n in range(250)]
    lines[100] = json.dumps({"type": "nonsense", "target": {"channel": "cli-file"}})
    lines[200] = "not json"
    done = run("send", "--service", "cli", "--file", "-", "--batch-size", "100",
               stdin="\n".join(lines) + "\n", url=publisher_service.base_url)
    assert done.returncode == 1, "some messages were refused"
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["line"] for r in results] == list(range(1, 251))
    refused = {r["line"]: r["error"]["code"] for r in results if "error" in r}
    assert refused == {101: "validation_failed", 201: "UsageError"}
    assert "250/" not in done.stderr and "248 sent" in done.stderr, done.stderr
    stats = PushClient(publisher_service.base_url).stats()
    assert stats["messages"]["published"] >= 248


def test_tail_prints_json_lines_and_follows_the_stream(publisher_service):
    tail = subprocess.Popen(
        [_script(), "tail", "--channel", "cli-tail", "--control", "--count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(PUSHSERVICE_URL=publisher_service.base_url))
    try:
        first = json.loads(tail.stdout.readline())
        assert first["event"] == "connected"
        with PushClient(publisher_service.base_url, service="cli") as client:
            client.info({"channel": "cli-tail"}, "one")
            client.info({"channel": "cli-tail"}, "two")
        out, err = tail.communicate(timeout=20)
    finally:
        tail.kill()
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["data"]["data"]["message"] for e in events] == ["one", "two"]
    assert all(e["event"] == "info" and e["id"] for e in events)
    assert tail.returncode == 0, err


def test_connections_and_kick_find_and_close_a_stream(publisher_service):
    url = publisher_service.base_url
    with PushClient(url) as client, client.subscribe(channels=["cli-kick"], control=True) \
            as subscription:
        connection_id = next(subscription).data["connection_id"]

        def listed():
            page = json.loads(run("connections", "--topic", "cli-kick", url=url).stdout)
            return [c["connection_id"] for c in page["connections"]]

        wait_until(lambda: connection_id in listed(), 15, message="the connection listed")
        everything = json.loads(run("connections", "--all", "--limit", "1", url=url).stdout)
        assert connection_id in [c["connection_id"] for c in everything["connections"]]
        kicked = run("kick", connection_id, url=url)
        assert kicked.returncode == 0, kicked.stderr
        assert json.loads(kicked.stdout)["found"] is True
        closing = next(subscription)
        assert closing.type == "closing" and closing.data["reason"] == "closed_by_operator"
    unknown = run("kick", "c_nobody", url=url)
    assert unknown.returncode == 1
    assert json.loads(unknown.stderr)["status"] == 404
    stats = run("stats", "--pretty", url=url)
    assert stats.returncode == 0 and "connections" in json.loads(stats.stdout)


def test_bad_usage_exits_with_2_and_says_why():
    done = run("send", "--type", "progress")
    assert done.returncode == 2
    assert "--target" in done.stderr
    done = run("token", "someone")
    assert done.returncode == 2 and "JWT_SECRET" in done.stderr


def test_tokens_match_what_the_service_expects():
    token = run("token", "knowledge-service", "--service", "knowledge-service", "--publish",
                "user:*", "--broadcast", "--ttl", "60", JWT_SECRET=SECRET).stdout.strip()
    claims = decode_unverified(token)
    assert claims["sub"] == "knowledge-service"
    assert claims["push"] == {"service": "knowledge-service", "publish": ["user:*"],
                              "broadcast": True}
    assert claims["exp"] - claims["iat"] == 60 and abs(claims["iat"] - time.time()) < 60
    # The same token as PyJWT (the service's library) makes it.
    import jwt

    assert jwt.decode(token, SECRET, algorithms=["HS256"]) == claims
    with pytest.raises(ValueError, match="32 bytes"):
        mint_hs256(build_claims("x"), "short")


@pytest.mark.timeout(60)
def test_minted_tokens_are_accepted_by_the_service_with_auth_on(service):
    secured = service(ENABLE_AUTH="true", JWT_SECRET=SECRET, PUBLISH_RATE_PER_SERVICE="0")
    url = secured.base_url

    def mint(*args: str) -> str:
        done = run("token", *args, JWT_SECRET=SECRET)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    publisher = mint("knowledge-service", "--service", "knowledge-service", "--publish",
                     "user:*")
    reader = mint_hs256(build_claims("123"), SECRET)  # what `pushservice token 123` mints
    admin = mint_hs256(build_claims("ops", roles=["admin"]), SECRET)
    with PushClient(url, token=reader) as reading, \
            reading.subscribe(user="123", control=True) as subscription:
        assert next(subscription).type == "connected"
        sent = run("send", "--service", "knowledge-service", "--type", "success",
                   "--target", "user_id=123", "--data", "result=done", url=url,
                   PUSHSERVICE_TOKEN=publisher)
        assert sent.returncode == 0, sent.stderr
        event = next(subscription)
        assert (event.type, event.data["data"]) == ("success", {"result": "done"})
    with PushClient(url, token=admin) as operator:
        assert operator.stats()["connections"]["total"] >= 0
    refused = run("stats", url=url, PUSHSERVICE_TOKEN=reader)
    assert refused.returncode == 1
    assert json.loads(refused.stderr)["error"]["code"] == "admin_required"
    with PushClient(url, token=publisher, service="knowledge-service") as client, \
            pytest.raises(PermissionDeniedError):
        client.info({"kb_id": "kb1"}, "not a topic this token may publish to")
    forged = mint_hs256(build_claims("123"), "another-secret-0123456789abcdef0123456789")
    with PushClient(url, token=forged) as client, pytest.raises(AuthenticationError):
        next(iter(client.subscribe(user="123")))
