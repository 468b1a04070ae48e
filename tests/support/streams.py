"""What the message stream holds, as tests count it."""

from __future__ import annotations

import redis

from pushservice.engine.reader import PROBE_TYPE
from pushservice.store import Keys

STREAM_KEY = Keys("pushservice").stream


def published_count(client: redis.Redis, key: str = STREAM_KEY) -> int:
    """Entries that are published messages: every worker also writes a health probe into
    the stream every HEALTH_PROBE_SECONDS, which no client receives."""
    probe = PROBE_TYPE.encode()
    return sum(1 for _, fields in client.xrange(key)
               if fields[b"h"].split(b" ", 2)[1] != probe)
