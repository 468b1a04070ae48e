"""The control channel: commands that every worker of every instance hears (Pub/Sub)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from .client import Keys, RedisConnections, translate_errors


class ControlStore:
    """Publish commands, and subscribe to them."""

    def __init__(self, connections: RedisConnections, keys: Keys) -> None:
        self.connections = connections
        self.keys = keys

    @translate_errors
    def send(self, command: dict[str, Any]) -> int:
        """Publish ``command``; returns how many subscribers (workers) received it."""
        return int(self.connections.command.publish(self.keys.control, orjson.dumps(command)))

    def listen(self) -> Iterator[dict[str, Any]]:
        """Yield commands as they arrive. Raises StoreUnavailableError when the
        subscription breaks; the caller reconnects."""
        client = self.connections.subscriber()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            translate_errors(pubsub.subscribe)(self.keys.control)
            next_message = translate_errors(pubsub.get_message)
            while True:
                message = next_message(timeout=30.0)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    command = orjson.loads(message["data"])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(command, dict):
                    yield command
        finally:
            pubsub.close()
            client.close()
