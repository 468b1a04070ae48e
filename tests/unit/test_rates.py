"""The per-service publish rate limit (pushservice.store.rates), on fakeredis."""

from __future__ import annotations

import pytest

from pushservice.settings import Settings
from pushservice.store import Keys, RedisConnections
from pushservice.store.rates import PublishRateLimiter


@pytest.fixture
def make_limiter(fake_clients):
    def make(rate: float, burst: int, prefix: str = "pushservice") -> PublishRateLimiter:
        settings = Settings(enable_auth=False).replace(
            publish_rate_per_service=rate, publish_burst_per_service=burst,
            stream_key_prefix=prefix)
        return PublishRateLimiter(settings, RedisConnections(settings), Keys(prefix))

    return make


def test_a_burst_passes_and_the_next_message_waits(make_limiter):
    # Rates slow enough that the time between two calls on a busy machine (Redis's clock
    # runs on) cannot matter: one message every 10 s.
    limiter = make_limiter(rate=0.1, burst=5)
    assert limiter.take({"svc": 5}) == 0
    wait = limiter.take({"svc": 1})
    assert 5 < wait <= 10.001


def test_services_have_separate_buckets(make_limiter):
    limiter = make_limiter(rate=1, burst=3)
    assert limiter.take({"a": 3}) == 0
    assert limiter.take({"a": 1}) > 0
    assert limiter.take({"b": 3}) == 0


def test_a_refused_request_charges_no_bucket(make_limiter):
    limiter = make_limiter(rate=1, burst=4)
    assert limiter.take({"a": 3}) == 0
    # "b" had room, but the request as a whole did not: nothing is charged to it.
    assert limiter.take({"a": 2, "b": 4}) > 0
    assert limiter.take({"b": 4}) == 0
    assert limiter.take({"a": 1}) == 0


def test_the_wait_grows_with_the_request(make_limiter):
    limiter = make_limiter(rate=0.01, burst=10)  # one message every 100 s
    assert limiter.take({"svc": 10}) == 0
    assert 95 < limiter.take({"svc": 1}) <= 100.001
    assert 495 < limiter.take({"svc": 5}) <= 500.001


def test_buckets_expire_from_redis(make_limiter, fake_redis):
    limiter = make_limiter(rate=100, burst=100)
    assert limiter.take({"svc": 50}) == 0
    (key,) = fake_redis.keys("*rate*")
    assert key == b"{pushservice}:rate:publish:svc"
    assert 0 < fake_redis.pttl(key) <= 501


def test_rate_zero_disables_the_limit(make_limiter, fake_redis):
    limiter = make_limiter(rate=0, burst=1)
    assert not limiter.enabled
    assert limiter.take({"svc": 1_000_000}) == 0
    assert fake_redis.keys("*") == []
