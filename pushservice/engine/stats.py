"""Counters of one worker, cheap enough for the hot path.

The reader and the connections increment plain integers; the metrics flusher and the
registry's refresh read them periodically (deltas for Prometheus and for the shared
counters in Redis, snapshots for the stats API). Nothing here does I/O.
"""

from __future__ import annotations

import time
from bisect import bisect_left

# Upper bounds (seconds) of the delivery-latency buckets; the last bucket is open.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
COUNTERS = ("publish_failed", "delivered", "slow_consumers", "replayed", "history_lost",
            "expired_skipped", "read_errors", "routed_entries", "offered_frames",
            "connections_opened", "connections_closed", "user_limit_refusals",
            # Delivery confirmation, and the slow consumer's low-priority frames let go.
            "acknowledged", "redelivered_on_connect", "redelivered_on_timeout",
            "inbox_overflow", "expired_unacknowledged", "webhook_delivered", "webhook_retried",
            "webhook_failed", "shed_low")


class LatencyWindow:
    """Delivery latencies of roughly the last ``window_seconds``, as bucket counts.

    Two half-windows rotate, so a snapshot always covers between one and two halves.
    """

    def __init__(self, window_seconds: float = 60.0) -> None:
        self.half = window_seconds / 2
        self._current = [0] * (len(LATENCY_BUCKETS) + 1)
        self._previous = [0] * (len(LATENCY_BUCKETS) + 1)
        self._rotated_at = time.monotonic()

    def observe(self, seconds: float) -> None:
        self._current[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def counts(self) -> list[int]:
        """Bucket counts of the recent window."""
        self._rotate()
        return [a + b for a, b in zip(self._current, self._previous)]

    def _rotate(self) -> None:
        now = time.monotonic()
        if now - self._rotated_at >= self.half:
            skipped_both = now - self._rotated_at >= 2 * self.half
            self._previous = [0] * len(self._current) if skipped_both else self._current
            self._current = [0] * len(self._previous)
            self._rotated_at = now


def percentile(counts: list[int], fraction: float) -> float | None:
    """The bucket bound under which ``fraction`` of the observations fall (None if empty).

    Observations above the last bound report that bound."""
    total = sum(counts)
    if total == 0:
        return None
    wanted = fraction * total
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running >= wanted:
            return LATENCY_BUCKETS[min(index, len(LATENCY_BUCKETS) - 1)]
    return LATENCY_BUCKETS[-1]


class WorkerStats:
    """Monotonic counters and the recent latency window of one worker."""

    __slots__ = COUNTERS + ("latency", "history_lost_reasons", "latency_observations")

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.latency = LatencyWindow()
        # Every observation since start, for Prometheus (drained by the metrics flusher).
        self.latency_observations: list[float] = []
        self.history_lost_reasons: dict[str, int] = {}

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def observe_latency(self, seconds: float) -> None:
        self.latency.observe(seconds)
        observations = self.latency_observations
        if len(observations) < 100_000:  # bounded even if nobody drains it
            observations.append(seconds)

    def note_history_lost(self, reason: str) -> None:
        self.history_lost += 1
        self.history_lost_reasons[reason] = self.history_lost_reasons.get(reason, 0) + 1

    def drain_latencies(self) -> list[float]:
        drained, self.latency_observations = self.latency_observations, []
        return drained


class DeltaTracker:
    """What changed in a set of counters since the last call."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def since_last(self, current: dict[str, int]) -> dict[str, int]:
        delta = {name: value - self._last.get(name, 0) for name, value in current.items()}
        self._last = dict(current)
        return {name: value for name, value in delta.items() if value}
