"""The per-service publish rate limit (pushservice.store.rates), on fakeredis."""

from __future__ import annotations

import socket
import time

import pytest

from pushservice.errors import StoreUnavailableError
from pushservice.settings import Settings
from pushservice.store import Keys, RedisConnections, rates
from pushservice.store.rates import PublishRateLimiter


def _limiter(rate: float, burst: int, prefix: str = "pushservice",
             **settings) -> PublishRateLimiter:
    settings = Settings(enable_auth=False).replace(
        publish_rate_per_service=rate, publish_burst_per_service=burst,
        stream_key_prefix=prefix, **settings)
    return PublishRateLimiter(settings, RedisConnections(settings), Keys(prefix))


@pytest.fixture
def make_limiter(fake_clients):
    return _limiter


@pytest.fixture
def count_round_trips(monkeypatch):
    """How many times each limiter went to Redis."""
    calls: list[PublishRateLimiter] = []
    original = PublishRateLimiter._call

    def counted(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PublishRateLimiter, "_call", counted)
    return calls


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


def test_a_busy_service_is_charged_in_leases_not_per_message(make_limiter, count_round_trips):
    limiter = make_limiter(rate=1000, burst=5000)
    for _ in range(1000):
        assert limiter.take({"svc": 1}) == 0
    # The first message leases nothing ahead; from the second on, the worker leases what
    # the service sends in LEASE_SECONDS, at most rate x MAX_LEASE_SECONDS = 200 tokens.
    assert 5 <= len(count_round_trips) <= 50, len(count_round_trips)


def test_a_rare_sender_leases_nothing_ahead(make_limiter, fake_redis):
    limiter = make_limiter(rate=1000, burst=5000)
    assert limiter.take({"svc": 1}) == 0
    lease = limiter._leases["svc"]
    assert lease.tokens == 0


def test_workers_share_the_limit_within_the_stated_tolerance(make_limiter):
    rate, burst = 200, 100
    workers = [make_limiter(rate=rate, burst=burst) for _ in range(3)]
    accepted = 0
    started = time.monotonic()
    for turn in range(600):
        if workers[turn % 3].take({"svc": 1}) == 0:
            accepted += 1
    elapsed = time.monotonic() - started
    held = rate * rates.MAX_LEASE_SECONDS  # the most a worker holds unspent
    # Never more than the bucket allows over the interval and what workers held.
    assert accepted <= burst + rate * elapsed + 3 * held + 1
    # And refused early by no more than what the workers may hold unspent.
    assert accepted >= burst - 3 * held


def test_tokens_a_lapsed_lease_left_unused_are_given_back(make_limiter, monkeypatch):
    # Long leases at one message per second, so that refills do not blur the counts.
    monkeypatch.setattr(rates, "MAX_LEASE_SECONDS", 10.0)
    monkeypatch.setattr(rates, "LEASE_SECONDS", 10.0)
    first, second = make_limiter(rate=1, burst=50), make_limiter(rate=1, burst=50)
    assert first.take({"svc": 1}) == 0
    assert first.take({"svc": 1}) == 0  # leases 10 ahead: 12 charged
    assert first._leases["svc"].tokens == 10
    assert second.take({"svc": 38}) == 0
    assert second.take({"svc": 5}) > 0, "the first worker holds 10 unused tokens"
    first._leases["svc"].expires_at = 0.0  # its lease lapses
    # Refused itself (100 is more than the bucket holds), it still gives the 10 back.
    assert first.take({"svc": 100}) > 0
    assert first._leases["svc"].tokens == 0
    assert second.take({"svc": 5}) == 0


def test_a_refused_renewal_returns_what_the_request_held(make_limiter, monkeypatch):
    monkeypatch.setattr(rates, "MAX_LEASE_SECONDS", 10.0)
    monkeypatch.setattr(rates, "LEASE_SECONDS", 10.0)
    limiter = make_limiter(rate=1, burst=20)
    assert limiter.take({"svc": 1}) == 0
    assert limiter.take({"svc": 1}) == 0  # holds 10 ahead, 12 charged
    # Needs 20: the 10 held and 10 more, which the bucket (8 left) cannot give.
    assert limiter.take({"svc": 20}) > 0
    assert limiter._leases["svc"].tokens == 10
    assert limiter.take({"svc": 10}) == 0  # spent locally


def test_redis_that_does_not_answer_fails_the_charge_in_time():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections and never answers
    try:
        limiter = _limiter(rate=1000, burst=5000,
                           redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as raised:
            limiter.take({"svc": 1}, timeout=0.3)
        # Bounded by the request's timeout, not the 5 s socket timeout (with a margin for
        # a loaded machine).
        assert time.monotonic() - started < 3
        assert raised.value.details == {"written": False}
        limiter.connections.close()
    finally:
        silent.close()
