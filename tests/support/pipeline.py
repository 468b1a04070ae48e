"""One worker's pipeline (store, hub, reader, registry, streams) in the test process, for
integration tests against a real redis-server. Streams open and close through the same
``Streams`` the HTTP view uses."""

from __future__ import annotations

import gevent

from pushservice.engine.event_stream import EventStream
from pushservice.engine.worker import WorkerEngine
from pushservice.message import MessageFactory
from pushservice.ops.capacity import ConnectionBudget
from pushservice.ops.registry import ConnectionRegistry
from pushservice.settings import Settings
from pushservice.store import ConnectionRecords, ControlStore, DeploymentRecords
from pushservice.web.streams import Streams
from tests.support.sse_client import Frame, SSEParser
from tests.support.waiting import wait_until


class StreamClient:
    """Consumes an event stream in a greenlet, as gunicorn would, and parses it."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.parser = SSEParser()
        self.frames: list[Frame] = []
        self.ended = False
        self._greenlet = gevent.spawn(self._run)

    @property
    def subscription(self):
        return self.stream.subscription

    def _run(self) -> None:
        try:
            for chunk in self.stream:
                self.frames.extend(self.parser.feed(chunk.decode("utf-8")))
        finally:
            self.ended = True

    def stop_reading(self) -> None:
        """Stop taking what the stream sends (a client that no longer reads)."""
        self._greenlet.kill()

    def messages(self) -> list[Frame]:
        return [f for f in self.frames if f.dispatches and f.event not in _CONTROL_EVENTS]

    def wait(self, predicate, timeout: float = 10.0) -> None:
        wait_until(lambda: predicate(self), timeout, interval=0.01,
                   message=lambda: f"the stream; frames so far: {self.frames[-5:]!r}")

    def wait_messages(self, count: int, timeout: float = 10.0) -> list[Frame]:
        self.wait(lambda client: len(client.messages()) >= count, timeout)
        return self.messages()

    def close(self) -> None:
        self._greenlet.kill(block=True, timeout=2)
        self.stream.close()


_CONTROL_EVENTS = {"connected", "history-lost", "closing", "heartbeat"}


class Pipeline:
    """One worker's worth of the service, in this process."""

    def __init__(self, redis_url: str, **overrides) -> None:
        defaults = {"redis_url": redis_url, "reader_block_ms": 200,
                    "heartbeat_interval": 30.0, "write_timeout_seconds": 5.0}
        defaults.update(overrides)
        self.settings = settings = Settings().replace(**defaults)
        self.engine = engine = WorkerEngine.build(settings)
        self.stats, self.store, self.hub, self.reader = (engine.stats, engine.store,
                                                         engine.hub, engine.reader)
        redis, keys = self.store.connections, self.store.keys
        self.registry = ConnectionRegistry(engine, ConnectionRecords(redis, keys),
                                           DeploymentRecords(redis, keys),
                                           ControlStore(redis, keys))
        self.streams = Streams(engine, self.registry, ConnectionBudget(settings.max_connections))
        self.messages = MessageFactory(settings.message_ttl, settings.max_message_bytes)
        self.clients: list[StreamClient] = []

    def start(self) -> Pipeline:
        self.engine.start()
        assert self.reader.ready.wait(10), "the reader did not reach Redis"
        return self

    def publish(self, *raw: dict, broadcast: bool = False, now: float | None = None):
        messages = [self.messages.build(item, broadcast=broadcast, now=now) for item in raw]
        return self.store.publish(messages)

    def subscribe(self, *topics: str, last_event_id: str | None = None,
                  queue_size: int | None = None, named: bool = True,
                  expires_at: float | None = None) -> StreamClient:
        stream = self.streams.open(topics, named=named, last_event_id=last_event_id,
                                   queue_size=queue_size, expires_at=expires_at)
        client = StreamClient(stream)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.engine.stop()
        self.store.close()


def message(n: int, **target) -> dict:
    """A progress message numbered ``n`` for ``target`` (default user 1)."""
    return {"type": "progress", "service": "svc", "target": target or {"user_id": "1"},
            "data": {"n": n, "progress": n % 101}}
