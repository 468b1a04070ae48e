"""Publish rate limits, counted in Redis so that they hold across workers and instances.

Each publishing service has a token bucket, kept as one key with its theoretical arrival
time (the generic cell rate algorithm): a service may send ``burst`` messages at once
and ``rate`` per second after that. One Lua script checks and charges every service of a
request atomically, on Redis's clock, so instances with skewed clocks agree.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..settings import Settings
from .client import Keys, RedisConnections, translate_errors

# KEYS: one bucket per service. ARGV[1]: microseconds per message; ARGV[2]: burst;
# ARGV[2 + i]: messages charged to KEYS[i]. Returns 0 when every bucket had room (and
# charges them all), else the microseconds until the fullest one would (charges none).
_TAKE_SCRIPT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local wait = 0
local arrivals = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local after = tat + interval * tonumber(ARGV[2 + i])
  local over = after - now - tolerance
  if over > wait then wait = over end
  arrivals[i] = after
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  local ttl_ms = math.ceil((arrivals[i] - now) / 1000) + 1
  redis.call('SET', key, string.format('%.0f', arrivals[i]), 'PX', ttl_ms)
end
return 0
"""


class PublishRateLimiter:
    """PUBLISH_RATE_PER_SERVICE messages per second per service, with bursts of up to
    PUBLISH_BURST_PER_SERVICE. A rate of 0 disables the limit (no Redis round trip)."""

    def __init__(self, settings: Settings, connections: RedisConnections, keys: Keys) -> None:
        self.rate = settings.publish_rate_per_service
        self.burst = settings.publish_burst_per_service
        self.connections = connections
        self._prefix = keys.rate_prefix + "publish:"
        # Microseconds between two messages, as the script's argument.
        self._interval_us = repr(1_000_000 / self.rate) if self.rate > 0 else "0"

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    @translate_errors
    def take(self, costs: Mapping[str, int]) -> float:
        """Charge each service its number of messages, all or none.

        Returns 0.0 when the messages may go out, else the seconds until they could.
        """
        if not self.enabled or not costs:
            return 0.0
        services = sorted(costs)
        keys = [self._prefix + service for service in services]
        args = [self._interval_us, self.burst, *(costs[service] for service in services)]
        wait_us = int(self.connections.script(_TAKE_SCRIPT)(
            keys=keys, args=args, client=self.connections.command))
        return wait_us / 1_000_000
