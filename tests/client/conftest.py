"""Fixtures of the Python client's tests (clients/python).

- ``fake``: a FakeService, an in-process stand-in for the publish API behind
  httpx.MockTransport: it answers like the service (202 with results, a 400 listing
  invalid messages by index, ...), records every request, and can be told to answer
  the next requests with given responses (503s, 429s, dropped connections).
- ``publisher_service`` (per module): a real instance (gunicorn, 2 gevent workers) with
  no publish rate limit and short reconnect hints, for end-to-end tests.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.gunicorn_server import ServiceProcess

VALID_TYPES = {"progress", "status", "error", "success", "warning", "info", "custom"}

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def message(n: int = 0, **target: Any) -> dict[str, Any]:
    """A valid progress message numbered ``n`` (default target: channel "tests")."""
    return {"type": "progress", "service": "client-tests",
            "target": target or {"channel": "tests"}, "data": {"n": n, "progress": n % 101}}


def error_response(status: int, code: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
    """An error answer in the service's shape."""
    return httpx.Response(status, headers=headers,
                          json={"error": {"code": code, "message": f"{code} happened",
                                          "details": details}})


@dataclass
class FakeService:
    """The publish API as the service answers it, in process."""

    requests: list[httpx.Request] = field(default_factory=list)
    scripted: deque[Answer] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sequence: int = 0

    def answer_next(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order, before behaving normally."""
        self.scripted.extend(answers)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def bodies(self, path: str | None = None) -> list[Any]:
        """The JSON bodies of the requests received (to ``path`` only, if given)."""
        return [json.loads(request.content) for request in self.requests
                if path is None or request.url.path == path]

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            scripted = self.scripted.popleft() if self.scripted else None
        if isinstance(scripted, Exception):
            raise scripted
        if isinstance(scripted, httpx.Response):
            return scripted
        if scripted is not None:
            return scripted(request)
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        if path.endswith("/batch"):
            messages = body["messages"]
            errors = [{"index": i, "errors": [{"field": "type", "error": "bad type"}]}
                      for i, m in enumerate(messages) if m.get("type") not in VALID_TYPES]
            if errors:
                return error_response(400, "validation_failed", errors)
            results = [self._published(m) for m in messages]
            return httpx.Response(202, json={"accepted": len(results), "results": results})
        if path.endswith(("/send", "/broadcast")):
            if body.get("type") not in VALID_TYPES:
                return error_response(400, "validation_failed",
                                      [{"field": "type", "error": "bad type"}])
            return httpx.Response(202, json=self._published(body))
        return httpx.Response(200, json={"path": path, "query": str(request.url.query)})

    def _published(self, message: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.sequence += 1
            sequence = self.sequence
        return {"id": message["id"], "event_id": f"e-1-{sequence}",
                "topics": ["tests"], "duplicate": False}


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


@pytest.fixture(scope="module")
def publisher_service(service) -> ServiceProcess:
    """A real instance without a publish rate limit, whose streams ask clients to come
    back after 200 ms, and whose per-user refusals say "retry after 1 s"."""
    return service(PUBLISH_RATE_PER_SERVICE="0", SSE_RETRY_MS="200",
                   REGISTRY_REFRESH_SECONDS="1", SHUTDOWN_GRACE_SECONDS="2")
