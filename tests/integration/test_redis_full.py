"""A Redis that reached its maxmemory (no eviction): publishes are refused whole, as 503,
and nothing of a refused request is in the stream."""

from __future__ import annotations

import pytest

from pushservice.errors import StoreUnavailableError
from pushservice.message import MessageFactory
from pushservice.settings import Settings
from pushservice.store import MessageStore

pytestmark = pytest.mark.redis_versions


def test_a_full_redis_refuses_whole_requests_with_503(make_redis_server):
    server = make_redis_server(extra_args=("--maxmemory", "3mb",
                                           "--maxmemory-policy", "noeviction"))
    settings = Settings(enable_auth=False, redis_url=server.url(0))
    store = MessageStore(settings)
    factory = MessageFactory(message_ttl=3600, max_message_bytes=65536)
    accepted = 0
    refused = None
    try:
        for batch in range(400):
            messages = [factory.build({"type": "info", "service": "filler",
                                       "target": {"channel": "c"},
                                       "data": {"text": "x" * 4000, "n": n}})
                        for n in range(20)]
            try:
                store.publish(messages)
            except StoreUnavailableError as exc:
                refused = exc
                break
            accepted += len(messages)
        assert refused is not None, "3 MB should not hold 8,000 messages of 4 kB"
        assert refused.status == 503
        assert refused.details == {"written": False}
        assert "out of memory" in refused.message
        assert store.length() == accepted, "a refused request wrote part of itself"
    finally:
        store.close()
