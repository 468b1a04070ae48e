"""Publish rate limits, counted in Redis so that they hold across workers and instances,
without a Redis round trip per request.

Each publishing service has a token bucket in Redis, kept as one key with its theoretical
arrival time (the generic cell rate algorithm): a service may send ``burst`` messages at
once and ``rate`` per second after that, on Redis's clock, so instances with skewed
clocks agree. A worker does not ask Redis for every message: it leases tokens for what
the service has been sending through it, enough for the next LEASE_SECONDS but never
more than MAX_LEASE_SECONDS of the service's rate, and spends them locally. Tokens still
unused when a lease lapses (after LEASE_SECONDS) are given back at the next lease.

The tolerance this buys, per service: every message is charged to the shared bucket
before it goes out, and a worker holds at most ``rate * MAX_LEASE_SECONDS`` tokens
charged but not spent. So in any interval of ``t`` seconds a service publishes at most
``rate * t + burst`` messages plus that much per worker, and a service at its limit may
be refused while other workers still hold that much each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import gevent

from ..errors import StoreUnavailableError
from ..settings import Settings
from .client import Keys, RedisConnections, translate_errors

# How far ahead a worker charges a service's bucket, in seconds of what the service sends
# through it, and how long before unused tokens are given back.
LEASE_SECONDS = 1.0
# The most a worker holds for one service, in seconds of the service's limit.
MAX_LEASE_SECONDS = 0.2

# KEYS: one bucket per service. ARGV[1]: microseconds per message; ARGV[2]: burst; then
# three numbers per key: the tokens needed now, the tokens wanted (needed plus what to
# lease ahead), the unused tokens given back. When every bucket has what is needed, each
# grants as much of what is wanted as it holds and the reply is {0, grant, grant, ...};
# else nothing is charged (tokens given back are still returned) and the reply is
# {microseconds until the fullest bucket would have what is needed}.
_LEASE_SCRIPT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local wait = 0
local arrivals = {}
local grants = {}
for i, key in ipairs(KEYS) do
  local need, want, back = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local tat = (tonumber(redis.call('GET', key)) or now) - interval * back
  if tat < now then tat = now end
  local room = math.floor((now + tolerance - tat) / interval)
  if need > 0 and room < need then
    local over = tat + interval * need - now - tolerance
    if over > wait then wait = over end
  end
  grants[i] = math.max(0, math.min(want, room))
  arrivals[i] = tat
end
local function store(key, tat)
  if tat > now then
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  else
    redis.call('DEL', key)
  end
end
if wait > 0 then
  for i, key in ipairs(KEYS) do
    if tonumber(ARGV[3 * i + 2]) > 0 then store(key, arrivals[i]) end
  end
  return {math.max(1, math.ceil(wait))}
end
local reply = {0}
for i, key in ipairs(KEYS) do
  store(key, arrivals[i] + interval * grants[i])
  reply[i + 1] = grants[i]
end
return reply
"""


class _Lease:
    """Tokens a worker holds for one service, and how fast it has been spending them."""

    __slots__ = ("expires_at", "since", "spent", "tokens")

    def __init__(self) -> None:
        self.tokens = 0  # charged to the shared bucket, not spent yet
        self.expires_at = 0.0  # monotonic; unused tokens are given back after it
        self.spent = 0  # tokens spent since ``since``
        self.since = time.monotonic()

    def usable(self, now: float) -> int:
        return self.tokens if now < self.expires_at else 0


class PublishRateLimiter:
    """PUBLISH_RATE_PER_SERVICE messages per second per service, with bursts of up to
    PUBLISH_BURST_PER_SERVICE. A rate of 0 disables the limit (no Redis round trip)."""

    def __init__(self, settings: Settings, connections: RedisConnections, keys: Keys) -> None:
        self.rate = settings.publish_rate_per_service
        self.burst = settings.publish_burst_per_service
        self.connections = connections
        self.timeout = settings.request_timeout_seconds
        self._prefix = keys.rate_prefix + "publish:"
        # Microseconds between two messages, as the script's argument.
        self._interval_us = repr(1_000_000 / self.rate) if self.rate > 0 else "0"
        # The most a worker leases ahead for one service.
        self._lease_cap = max(0, min(self.burst, int(self.rate * MAX_LEASE_SECONDS)))
        self._leases: dict[str, _Lease] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, costs: Mapping[str, int], timeout: float | None = None) -> float:
        """Charge each service its number of messages, all or none.

        Returns 0.0 when the messages may go out, else the seconds until they could.
        Spends leased tokens when this worker holds enough; otherwise one round trip to
        Redis, bounded by ``timeout`` seconds (REQUEST_TIMEOUT_SECONDS by default;
        StoreUnavailableError after it)."""
        if not self.enabled or not costs:
            return 0.0
        now = time.monotonic()
        leases = {service: self._lease(service) for service in costs}
        if all(lease.usable(now) >= costs[service] for service, lease in leases.items()):
            for service, lease in leases.items():
                lease.tokens -= costs[service]
                lease.spent += costs[service]
            return 0.0
        return self._renew(costs, leases, now, self.timeout if timeout is None else timeout)

    def _lease(self, service: str) -> _Lease:
        lease = self._leases.get(service)
        if lease is None:
            lease = self._leases[service] = _Lease()
        return lease

    def _renew(self, costs: Mapping[str, int], leases: dict[str, _Lease], now: float,
               timeout: float) -> float:
        """Lease what the request lacks (and what its services will want next) in one
        round trip, giving back lapsed tokens on the way."""
        services = sorted(costs)
        # Take what the leases hold now, so that concurrent requests of this worker
        # cannot spend the same tokens while the round trip is in flight.
        held = {service: min(leases[service].usable(now), costs[service])
                for service in services}
        args: list[object] = [self._interval_us, self.burst]
        for service in services:
            lease = leases[service]
            back = 0
            if now >= lease.expires_at:
                back, lease.tokens = lease.tokens, 0
            lease.tokens -= held[service]
            need = costs[service] - held[service]
            args += [need, need + self._lease_ahead(lease, now), back]
        try:
            reply = self._call(services, args, timeout)
        except BaseException:
            self._restore(leases, held)
            raise
        if reply[0]:
            self._restore(leases, held)
            return int(reply[0]) / 1_000_000
        for service, granted in zip(services, reply[1:], strict=True):
            lease = leases[service]
            lease.tokens += int(granted) - (costs[service] - held[service])
            lease.expires_at = now + LEASE_SECONDS
            lease.spent += costs[service]
        return 0.0

    def _lease_ahead(self, lease: _Lease, now: float) -> int:
        """Tokens to lease beyond the request: what the service spent through this worker
        since the last lease, as a rate, for LEASE_SECONDS (none for a first message)."""
        elapsed = max(now - lease.since, 0.001)
        ahead = math.ceil(lease.spent / elapsed * LEASE_SECONDS)
        lease.spent, lease.since = 0, now
        return min(self._lease_cap, ahead)

    @staticmethod
    def _restore(leases: dict[str, _Lease], held: dict[str, int]) -> None:
        for service, tokens in held.items():
            leases[service].tokens += tokens

    @translate_errors
    def _call(self, services: list[str], args: list[object], timeout: float) -> list:
        keys = [self._prefix + service for service in services]
        error = StoreUnavailableError(
            "Redis did not answer within REQUEST_TIMEOUT_SECONDS; nothing was written.",
            retry_after=2, details={"written": False})
        # redis-py closes a connection interrupted by the timeout, so none is reused
        # with a reply still pending.
        with gevent.Timeout(max(timeout, 0.001), error):
            return self.connections.script(_LEASE_SCRIPT)(
                keys=keys, args=args, client=self.connections.command)
