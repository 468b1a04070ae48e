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


def test_history_and_remembered_ids_stay_within_their_byte_and_count_bounds(redis_url):
    settings = Settings(enable_auth=False, redis_url=redis_url, stream_max_bytes=200_000,
                        message_ids_per_service=50)
    store = MessageStore(settings)
    factory = MessageFactory(message_ttl=3600, max_message_bytes=65536)
    try:
        for batch in range(20):
            store.publish([factory.build({
                "id": f"m-{batch}-{n}", "type": "info", "service": "filler",
                "target": {"channel": [f"topic-{k}-{'t' * 90}" for k in range(20)]},
                "data": {"text": "x" * 4000}}) for n in range(10)])
        client = store.client
        entries = client.xrange(store.stream_key)
        held = sum(len(fields[b"h"]) + len(fields[b"m"]) + 64 for _, fields in entries)
        assert held <= 200_000
        assert 20 <= len(entries) < 200  # the newest, as many as fit (about 8 kB each)
        ids = store.keys.message_prefix + "filler"
        assert client.hlen(ids) == 50 and client.zcard(ids + ":expiry") == 50
        assert client.hexists(ids, "m-19-9") and not client.hexists(ids, "m-0-0")
    finally:
        store.close()
