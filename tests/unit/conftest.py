"""Fixtures of the unit tests: settings, a Store on fakeredis, and a reference SSE parser.

- ``settings``: Settings with their defaults (not read from the environment).
- ``fake_clients``: every Redis client the service builds (command, reader, probe, ...) is
  a fakeredis client of ``fake_redis_server``, so they all share one in-memory Redis, which
  ``fake_redis`` (tests/conftest.py) looks at too.
- ``store``: a MessageStore on those clients.
- ``make_engine``: ``make_engine(**settings_changes)`` builds a worker's engine (hub,
  reader, stats) on ``store``, not started.
- ``socket_pair``: a connected pair of real sockets, the service's end first.
- ``parse_sse``: a small SSE parser that follows the HTML standard's algorithm to the
  letter, to check what a browser would make of the bytes the service writes.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field

import pytest

from pushservice.engine.hub import Hub
from pushservice.engine.probe import DeliveryProbe
from pushservice.engine.reader import Reader
from pushservice.engine.stats import WorkerStats
from pushservice.engine.worker import WorkerEngine
from pushservice.settings import Settings
from pushservice.store import MessageStore, RedisConnections


@pytest.fixture(autouse=True)
def stop_started_services(monkeypatch):
    """Apps that a test started (a request to /health or a stream starts the worker's
    greenlets) are stopped after it, so that no loop outlives its test."""
    from pushservice.web.extension import PushService

    started = []
    start = PushService.start

    def tracked(self) -> None:
        started.append(self)
        start(self)

    monkeypatch.setattr(PushService, "start", tracked)
    yield
    for service in started:
        service.stop()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def socket_pair():
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


@pytest.fixture
def fake_clients(monkeypatch, fake_redis_server) -> None:
    import fakeredis

    def make(self, *args, **kwargs):
        return fakeredis.FakeRedis(server=fake_redis_server)

    monkeypatch.setattr(RedisConnections, "_make", make)


@pytest.fixture
def store(fake_clients, settings) -> MessageStore:
    instance = MessageStore(settings)
    yield instance
    instance.close()


@pytest.fixture
def make_engine(store, settings):
    def make(**changes) -> WorkerEngine:
        chosen = settings.replace(**changes)
        stats = WorkerStats()
        hub = Hub(chosen, stats)
        reader = Reader(chosen, store, hub, stats)
        return WorkerEngine(chosen, stats, store, hub, reader,
                            DeliveryProbe(chosen, store, reader))

    return make


# -- a reference SSE parser ------------------------------------------------------------

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass
class Block:
    """The fields and comment lines between two blank lines, in order."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    """An event a browser's EventSource dispatches."""

    type: str
    data: str
    last_event_id: str


@dataclass
class ParsedStream:
    blocks: list[Block]
    events: list[Event]
    last_event_id: str
    retry: int | None
    # Text after the last line break, and a block that no blank line ended: what a
    # browser would still be waiting to complete.
    rest: str
    unfinished: Block | None

    @property
    def complete(self) -> bool:
        return self.rest == "" and self.unfinished is None

    @property
    def fields(self) -> list[tuple[str, str]]:
        return [item for block in self.blocks for item in block.fields]


def parse_sse(stream: bytes | str, last_event_id: str = "") -> ParsedStream:
    """Interpret a complete stream as the HTML standard's EventSource does (section
    "Interpreting an event stream"): UTF-8, an optional leading BOM, lines ended by CRLF,
    CR or LF, ``:`` comments, one optional space after the colon, ``id`` values holding
    NUL ignored, events dispatched on a blank line only when there is data."""
    text = stream.decode("utf-8") if isinstance(stream, bytes) else stream
    text = text.removeprefix("\ufeff")
    lines = _LINE_END.split(text)
    rest = lines.pop()
    blocks: list[Block] = []
    events: list[Event] = []
    block = Block()
    data: list[str] = []
    event_type = ""
    retry = None
    for line in lines:
        if line == "":
            blocks.append(block)
            block = Block()
            if data:
                events.append(Event(event_type or "message", "\n".join(data), last_event_id))
            data, event_type = [], ""
            continue
        if line.startswith(":"):
            block.comments.append(line[1:].removeprefix(" "))
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        block.fields.append((name, value))
        if name == "event":
            event_type = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\x00" not in value:
            last_event_id = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    unfinished = block if block.fields or block.comments else None
    return ParsedStream(blocks, events, last_event_id, retry, rest, unfinished)


@pytest.fixture(scope="session")
def sse():
    """The reference parser, as a fixture (session scoped, so hypothesis tests can use it)."""
    return parse_sse
