"""One worker's pipeline (store, hub, reader greenlet, stream sessions) in the test process,
for integration tests against a real redis-server."""

from __future__ import annotations

import gevent

from pushservice.hub import Hub
from pushservice.message import MessageFactory
from pushservice.settings import Settings
from pushservice.store import Store
from pushservice.streaming import StreamSession, plan_resume
from pushservice.subscription import Subscription
from tests.support.sse_client import Frame, SSEParser
from tests.support.waiting import wait_until


class Reader:
    """Consumes a StreamSession body in a greenlet, like gunicorn would, and parses it."""

    def __init__(self, session: StreamSession) -> None:
        self.session = session
        self.parser = SSEParser()
        self.frames: list[Frame] = []
        self.ended = False
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            for chunk in self.session:
                self.frames.extend(self.parser.feed(chunk.decode("utf-8")))
        finally:
            self.ended = True

    def messages(self) -> list[Frame]:
        return [f for f in self.frames if f.dispatches and f.event not in _CONTROL_EVENTS]

    def wait(self, predicate, timeout: float = 10.0) -> None:
        wait_until(lambda: predicate(self), timeout, interval=0.01,
                   message=lambda: f"the stream; frames so far: {self.frames[-5:]!r}")

    def wait_messages(self, count: int, timeout: float = 10.0) -> list[Frame]:
        self.wait(lambda reader: len(reader.messages()) >= count, timeout)
        return self.messages()

    def close(self) -> None:
        self._greenlet.kill(block=True, timeout=2)
        self.session.close()


_CONTROL_EVENTS = {"connected", "history-lost", "closing", "heartbeat"}


class Pipeline:
    """One worker's worth of the service, in this process."""

    def __init__(self, redis_url: str, **overrides) -> None:
        defaults = {"redis_url": redis_url, "reader_block_ms": 200,
                    "heartbeat_interval": 30.0, "write_timeout_seconds": 5.0}
        defaults.update(overrides)
        self.settings = Settings().replace(**defaults)
        self.store = Store(self.settings)
        self.hub = Hub(self.settings, self.store)
        self.messages = MessageFactory(self.settings.message_ttl,
                                       self.settings.max_message_bytes)
        self.readers: list[Reader] = []

    def start(self) -> Pipeline:
        self.hub.start()
        assert self.hub.ready.wait(10), "the reader did not reach Redis"
        return self

    def publish(self, *raw: dict, broadcast: bool = False, now: float | None = None):
        messages = [self.messages.build(item, broadcast=broadcast, now=now) for item in raw]
        return self.store.publish(messages)

    def subscribe(self, *topics: str, last_event_id: str | None = None,
                  queue_size: int | None = None, named: bool = True) -> Reader:
        plan = plan_resume(last_event_id, self.store.stream_info)
        subscription = Subscription(tuple(topics), queue_size or self.settings.connection_queue_size,
                                    named=named)
        reader = Reader(StreamSession(self.hub, subscription, plan))
        self.readers.append(reader)
        return reader

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        self.hub.stop()
        self.store.close()




def message(n: int, **target) -> dict:
    """A progress message numbered ``n`` for ``target`` (default user 1)."""
    return {"type": "progress", "service": "svc", "target": target or {"user_id": "1"},
            "data": {"n": n, "progress": n % 101}}
