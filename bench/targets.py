"""The targets pushservice must meet, checked against one invocation's results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.procstat import NOISE_LIMIT

Results = dict[tuple[str, str], dict]


@dataclass
class Check:
    """One figure compared with its target: PASS, MISS, or n/a when a run is missing."""

    target: str
    figure: str
    status: str

    def line(self) -> str:
        return f"{self.status:4}  {self.target}: {self.figure}"


def _get(results: Results, scenario: str, server: str, *path: str):
    run = results.get((scenario, server))
    if run is None or "error" in run:
        return None
    value = run
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return None
    return value


def _versus(a: float, b: float, unit: str) -> tuple[float, str]:
    """``a / b``, and the figure that shows it."""
    ratio = a / b if b else float("inf")
    return ratio, f"{a:,.1f}{unit} vs {b:,.1f}{unit} = {ratio:.2f}x"


def _ratio(target: str, a, b, minimum: float, unit: str = "") -> Check:
    if a is None or b is None:
        return Check(target, "not measured", "n/a")
    ratio, figure = _versus(a, b, unit)
    return Check(target, f"{figure} (need >= {minimum}x)",
                 "PASS" if ratio >= minimum else "MISS")


def _no_more_than(target: str, a, b, maximum: float, unit: str = "") -> Check:
    if a is None or b is None:
        return Check(target, "not measured", "n/a")
    ratio, figure = _versus(a, b, unit)
    return Check(target, f"{figure} (need <= {maximum}x)",
                 "PASS" if ratio <= maximum else "MISS")


def _at_most(target: str, value, limit: float, unit: str) -> Check:
    if value is None:
        return Check(target, "not measured", "n/a")
    figure = f"{value:,.1f}{unit} (need < {limit:,}{unit})"
    return Check(target, figure, "PASS" if value < limit else "MISS")


def _at_least(target: str, value, limit: float, unit: str) -> Check:
    if value is None:
        return Check(target, "not measured", "n/a")
    figure = f"{value:,.1f}{unit} (need >= {limit:,}{unit})"
    return Check(target, figure, "PASS" if value >= limit else "MISS")


def _exact(target: str, figure: str | None, ok: bool) -> Check:
    if figure is None:
        return Check(target, "not measured", "n/a")
    return Check(target, figure, "PASS" if ok else "MISS")


def _fanout_5000(r: Results) -> list[Check]:
    s, p = "fanout-5000x100", "pushservice"
    fps = _get(r, s, p, "frames", "delivered_per_s")
    lost = _get(r, s, p, "frames", "lost")
    dup = _get(r, s, p, "frames", "duplicated")
    figure = None if lost is None else f"lost {lost:,}, duplicated {dup:,}"
    return [
        _ratio(
            f"{s} delivered frames/s vs raw-gevent",
            fps,
            _get(r, s, "raw-gevent", "frames", "delivered_per_s"),
            0.5,
            " f/s",
        ),
        _ratio(
            f"{s} delivered frames/s vs flask-sse",
            fps,
            _get(r, s, "flask-sse", "frames", "delivered_per_s"),
            20,
            " f/s",
        ),
        _exact(f"{s} 0 lost, 0 duplicated", figure, lost == 0 and dup == 0),
    ]


def _on_schedule(target: str, pub: dict | None) -> Check:
    """Every scheduled message published, none later than half a second."""
    if pub is None:
        return Check(target, "not measured", "n/a")
    ok = pub["accepted"] == pub["scheduled"] and pub["max_schedule_slip_ms"] <= 500
    figure = (f"{pub['accepted']:,} of {pub['scheduled']:,} accepted, schedule slipped at "
              f"most {pub['max_schedule_slip_ms']:,.0f} ms")
    return Check(target, figure, "PASS" if ok else "MISS")


def _fanout_closed(r: Results) -> list[Check]:
    s, p = "fanout-5000x100-closed", "pushservice"
    lost = _get(r, s, p, "frames", "lost")
    dup = _get(r, s, p, "frames", "duplicated")
    return [
        _on_schedule(f"{s} every message published on time", _get(r, s, p, "published")),
        _at_most(f"{s} publish p99 (8 publishers waiting for their answers)",
                 _get(r, s, p, "published", "request_ms", "p99"), 50, " ms"),
        _ratio(f"{s} delivered frames/s vs raw-gevent with the same publishers",
               _get(r, s, p, "frames", "delivered_per_s"),
               _get(r, s, "raw-gevent", "frames", "delivered_per_s"), 0.8, " f/s"),
        _exact(f"{s} 0 lost, 0 duplicated",
               None if lost is None else f"lost {lost:,}, duplicated {dup:,}",
               lost == 0 and dup == 0),
    ]


def _targeted_closed(r: Results) -> list[Check]:
    s, p = "targeted-2000x2000-closed", "pushservice"
    return [
        _on_schedule(f"{s} every message published on time", _get(r, s, p, "published")),
        _at_most(f"{s} publish p99 (32 publishers waiting for their answers)",
                 _get(r, s, p, "published", "request_ms", "p99"), 50, " ms"),
        _at_most(f"{s} p99 latency", _get(r, s, p, "latency_ms", "p99"), 50, " ms"),
    ]


def _fanout_1000(r: Results) -> list[Check]:
    s, p = "fanout-1000x20", "pushservice"
    p99 = _get(r, s, p, "latency_ms", "p99")
    raw = _get(r, s, "raw-gevent", "latency_ms", "p99")
    return [
        _at_most(f"{s} p99 latency", p99, 100, " ms"),
        _no_more_than(f"{s} p99 vs raw-gevent", p99, raw, 1.5, " ms"),
    ]


def _targeted(r: Results) -> list[Check]:
    s, p = "targeted-2000x2000", "pushservice"
    frames = _get(r, s, p, "frames")
    pub = _get(r, s, p, "published")
    figure, ok = None, False
    if frames is not None and pub is not None:
        ok = (
            frames["lost"] == 0
            and frames["duplicated"] == 0
            and frames["delivered"] == frames["expected"]
            and pub["accepted"] == pub["scheduled"]
        )
        figure = (f"{frames['delivered']:,} of {frames['expected']:,} frames "
                  f"({pub['accepted']:,} of {pub['scheduled']:,} messages accepted), "
                  f"lost {frames['lost']:,}, duplicated {frames['duplicated']:,}")
    return [_exact(f"{s} all delivered", figure, ok),
            _at_most(f"{s} p99 latency", _get(r, s, p, "latency_ms", "p99"), 50, " ms")]


def _idle(r: Results) -> list[Check]:
    s, p = "idle-10000", "pushservice"
    held = _get(r, s, p, "connections", "held")
    rss = _get(r, s, p, "server_stats", "peak_rss_mb")
    return [
        _exact(
            f"{s} all held", None if held is None else f"{held:,} of 10,000 held", held == 10000
        ),
        _no_more_than(
            f"{s} service peak RSS vs raw-gevent's",
            rss,
            _get(r, s, "raw-gevent", "server_stats", "peak_rss_mb"),
            2.0,
            " MB",
        ),
        _at_most(f"{s} service peak RSS", rss, 512, " MB"),
    ]


def _ingest(r: Results) -> list[Check]:
    p = "pushservice"
    return [
        _at_least(
            "ingest-batch accepted msg/s",
            _get(r, "ingest-batch", p, "published", "accepted_per_s"),
            50_000,
            " msg/s",
        ),
        _ratio(
            "ingest-single accepted msg/s vs flask-sse",
            _get(r, "ingest-single", p, "published", "accepted_per_s"),
            _get(r, "ingest-single", "flask-sse", "published", "accepted_per_s"),
            10,
            " msg/s",
        ),
        _reference(
            "ingest-single: the stack's own floor (a do-nothing Flask endpoint) vs flask-sse",
            _get(r, "ingest-single", "flask-floor", "published", "accepted_per_s"),
            _get(r, "ingest-single", "flask-sse", "published", "accepted_per_s"),
            " msg/s",
        ),
        _ratio(
            "ingest-single: pushservice vs that floor (same worker class and access log)",
            _get(r, "ingest-single", p, "published", "accepted_per_s"),
            _get(r, "ingest-single", "flask-floor", "published", "accepted_per_s"),
            0.8,
            " msg/s",
        ),
    ]


def _reference(target: str, a, b, unit: str) -> Check:
    """A ratio reported for reading the others, not a target of its own."""
    if a is None or b is None:
        return Check(target, "not measured", "n/a")
    return Check(target, _versus(a, b, unit)[1], "INFO")


def _scaling(r: Results) -> list[Check]:
    p = "pushservice"
    return [
        _ratio(
            "scaling 2 workers vs 1 worker delivered frames/s",
            _get(r, "scaling-2w", p, "frames", "delivered_per_s"),
            _get(r, "scaling-1w", p, "frames", "delivered_per_s"),
            1.6,
            " f/s",
        )
    ]


TARGETS: list[Callable[[Results], list[Check]]] = [
    _fanout_5000,
    _fanout_closed,
    _fanout_1000,
    _targeted,
    _targeted_closed,
    _idle,
    _ingest,
    _scaling,
]


# Which scenarios each target reads, to flag a figure that came from a disturbed run.
_SCENARIOS_OF = {
    _fanout_5000: ("fanout-5000x100",),
    _fanout_closed: ("fanout-5000x100-closed",),
    _fanout_1000: ("fanout-1000x20",),
    _targeted: ("targeted-2000x2000",),
    _targeted_closed: ("targeted-2000x2000-closed",),
    _idle: ("idle-10000",),
    _ingest: ("ingest-single", "ingest-batch"),
    _scaling: ("scaling-1w", "scaling-2w"),
}


def evaluate(results: Results) -> list[Check]:
    """Every target checked against ``results`` (keyed by (scenario, server)); a figure
    that comes from a run disturbed by other processes says so."""
    checks = []
    for target in TARGETS:
        noisy = any(
            run.get("other_load", 0) > NOISE_LIMIT
            for (scenario, _), run in results.items()
            if scenario in _SCENARIOS_OF[target]
        )
        for check in target(results):
            if noisy and check.status != "n/a":
                check.figure += " (a run involved was noisy)"
            checks.append(check)
    return checks
