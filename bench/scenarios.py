"""The scenarios of the suite: who subscribes to what, and how messages are published."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

# One subscriber process holds at most this many connections (a process may hold 20,000
# open files here; this leaves room for the process's own).
MAX_CONNECTIONS_PER_PROCESS = 5000
# Connections whose every frame is parsed for latency: about this many frames in all.
LATENCY_SAMPLE_FRAMES = 100_000


@dataclass(frozen=True)
class Scenario:
    """One measured situation. ``rate`` 0 with ``mode`` "idle" means no publishing."""

    name: str
    description: str
    subscribers: int
    path: str = "/sse/stream/c1"  # {i}: connection number
    topic: str = "c1"  # the topic that path subscribes to
    mode: str = "rate"  # rate | closed | idle
    rate: float = 0.0  # messages per second (rate mode)
    duration_s: float = 10.0  # publishing time, or holding time when idle
    target: str = "channel:c1"  # channel:NAME or user:u{k}
    targets: int = 1  # how many users u{k} the messages spread over
    publishers: int = 8  # publishing connections
    # rate mode: a closed loop keeps exactly ``publishers`` connections, each waiting for
    # its answer before the next send (as a service's small HTTP pool does); otherwise the
    # generator opens more rather than let the schedule slip (an open loop).
    closed_loop: bool = False
    batch: int = 0  # messages per batch request, 0 = single sends
    # Publishing services the messages spread over (bench-0, bench-1, ...). With more
    # than one, the server keeps its default per-service publish rate limit on, as a
    # deployment where many services publish does; with one, the limit is off.
    services: int = 1
    window_ms: float = 0.0  # rate mode: what falls due in a window goes as one batch
    heartbeat_s: float = 30.0
    workers: int = 1
    server_cores: str | None = "0"  # None = unpinned
    generator_cores: str | None = "1"
    generator_processes: int = 0  # 0 = as many as the connection count needs

    @property
    def frames_per_connection(self) -> float:
        """Message frames each connection should receive (for latency sampling)."""
        if self.mode != "rate":
            return 0.0
        return self.rate * self.duration_s / max(1, self.targets)

    @property
    def sample_every(self) -> int:
        """Parse latency on every k-th connection, for about LATENCY_SAMPLE_FRAMES samples
        (0: on none)."""
        if self.batch:
            return 0  # hundreds of thousands of frames/s on one connection: count only
        total = self.frames_per_connection * self.subscribers
        if total <= LATENCY_SAMPLE_FRAMES:
            return 1
        return max(1, math.ceil(total / LATENCY_SAMPLE_FRAMES))

    @property
    def processes(self) -> int:
        """Subscriber processes to run."""
        needed = math.ceil(self.subscribers / MAX_CONNECTIONS_PER_PROCESS)
        return max(1, self.generator_processes, needed)

    @property
    def pinning(self) -> str:
        """Where the server and the generator ran, in words."""
        server = f"cpu {self.server_cores}" if self.server_cores else "unpinned"
        gen = f"cpu {self.generator_cores}" if self.generator_cores else "unpinned"
        return f"server+redis on {server}, generator on {gen}"


def _fanout(subs: int, rate: int) -> Scenario:
    return Scenario(
        name=f"fanout-{subs}x{rate}",
        description=f"{subs:,} subscribers on one channel, {rate} msg/s for 10 s",
        subscribers=subs,
        rate=rate,
        publishers=4,
    )


# Scaling needs a load beyond one worker, or both figures are just the offered rate:
# the fan-out shape at 200 msg/s (1M frames/s offered) for 5 s.
_SCALING_BASE = replace(
    _fanout(5000, 200),
    duration_s=5,
    server_cores=None,
    generator_cores=None,
    generator_processes=2,
)

_TARGETED = Scenario(
    name="targeted-2000x2000",
    description="2,000 subscribers on their own user topic, 2,000 msg/s for 10 s "
    "(batched every 5 ms), "
    "each to one user",
    subscribers=2000,
    path="/sse/user/u{i}",
    topic="user:u{i}",
    rate=2000,
    target="user:u{k}",
    targets=2000,
    publishers=32,
    # A service publishing 2,000 msg/s batches them: every 5 ms, what fell due.
    window_ms=5.0,
)


def _closed(scenario: Scenario, publishers: int) -> Scenario:
    """``scenario`` published by ``publishers`` connections that each wait for their
    answer before sending the next message."""
    return replace(scenario, name=scenario.name + "-closed", closed_loop=True,
                   publishers=publishers,
                   description=scenario.description + f"; {publishers} publishers, each "
                   "waiting for its answer (closed loop)")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        _fanout(1000, 20),
        _fanout(1000, 100),
        _fanout(5000, 20),
        _fanout(5000, 100),
        _closed(_fanout(5000, 100), 8),
        _TARGETED,
        _closed(replace(_TARGETED, window_ms=0.0,
                        description="2,000 subscribers on their own user topic, 2,000 msg/s "
                        "for 10 s as single sends, each to one user"), 32),
        Scenario(
            name="idle-10000",
            description="10,000 connections held 20 s, heartbeat every 5 s",
            subscribers=10000,
            mode="idle",
            duration_s=20,
            heartbeat_s=5,
        ),
        Scenario(
            name="ingest-single",
            description="single sends from 32 concurrent publishers for 10 s, 1 subscriber",
            subscribers=1,
            path="/sse/stream/ingest",
            topic="ingest",
            target="channel:ingest",
            mode="closed",
            publishers=32,
            services=32,
        ),
        Scenario(
            name="ingest-batch",
            description="batches of 500 from 4 concurrent publishers for 10 s, 1 subscriber",
            subscribers=1,
            path="/sse/stream/ingest",
            topic="ingest",
            target="channel:ingest",
            mode="closed",
            publishers=4,
            batch=500,
            services=100,
        ),
        replace(
            _SCALING_BASE,
            name="scaling-1w",
            description="5,000 subscribers on one channel, 200 msg/s for 5 s (1M frames/s "
            "offered), 1 worker pinned to one core, generator unpinned",
            server_cores="0",
        ),
        replace(
            _SCALING_BASE,
            name="scaling-2w",
            description="as scaling-1w with 2 workers on both cores, generator unpinned",
            workers=2,
            server_cores="0,1",
        ),
    ]
}

# Scenarios a server cannot run at all (raw-gevent is one process with no bus), or is
# not meant for (the Flask floor measures the publish path only).
UNSUPPORTED = {("raw-gevent", "scaling-2w"): "one process, no bus between workers"}
UNSUPPORTED.update({
    ("flask-floor", name): "measures the publish path only (ingest scenarios)"
    for name in SCENARIOS if not name.startswith("ingest")
})
