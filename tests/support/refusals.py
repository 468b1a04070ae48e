"""What a stream request refused for a reason that time will cure looks like: a short
``200 text/event-stream`` that says why and when to come back, then ends."""

from __future__ import annotations

from typing import Any

from .sse_client import SSEClient


def assert_refused(client: SSEClient, reason: str, timeout: float = 5.0) -> dict[str, Any]:
    """Check that ``client`` was refused for ``reason`` in the way a browser's EventSource
    comes back from by itself, and return the ``closing`` event's data."""
    assert client.status == 200, f"expected a 200 refusal stream, got {client.status}"
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.headers["pushservice-refused"] == reason
    assert int(client.headers["retry-after"]) >= 1
    frames = list(client.frames(timeout))  # it ends by itself
    (closing,) = [frame for frame in frames if frame.dispatches]
    assert closing.event == "closing", frames
    assert closing.id is None  # the client keeps the position it had
    payload = closing.json()
    assert payload["reason"] == reason and payload["refused"] is True
    assert closing.retry == payload["retry_ms"] and payload["retry_ms"] > 0
    return payload
