"""Rendering results: one line per run on the console, and docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from bench.procstat import NOISE_LIMIT
from bench.scenarios import SCENARIOS
from bench.servers import SERVERS, redis_executable
from bench.targets import Check


def _num(value, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{unit}"


def headline(run: dict) -> str:
    """The one figure that matters most for the run's scenario, with its caveats."""
    if "error" in run:
        return "error"
    name = run["scenario"]
    frames, lat = run.get("frames", {}), run.get("latency_ms", {})
    if name.startswith("idle"):
        c = run["connections"]
        text = (
            f"{c['held']:,} held, {_num(run['server_stats']['peak_rss_mb'], 0)} MB, "
            f">= {run['heartbeats']['min_per_connection']} heartbeats each"
        )
    elif name.startswith("ingest"):
        text = f"{_num(run['published']['accepted_per_s'])} msg/s"
    else:
        text = (
            f"{_num(frames.get('delivered_per_s'))} f/s, p99 {_num(lat.get('p99'), 1)} ms"
            f", lost {frames.get('lost', 0):,}"
        )
        if frames.get("lost") and frames.get("drain_ended") == "deadline":
            text += " (late)"
        if frames.get("duplicated"):
            text += f", dup {frames['duplicated']:,}"
    if run["generator"]["capped"]:
        text += " (generator-capped)"
    return text


def console_line(run: dict) -> str:
    """A one-line summary of a run for the terminal."""
    head = f"{run['scenario']:<20} {run['server']:<12}"
    if "error" in run:
        return f"{head} ERROR {run['error'].splitlines()[0][:100]}"
    return f"{head} {headline(run)}  [{run.get('limited_by', '')}]"


def ceiling_line(c: dict) -> str:
    """A one-line summary of a generator ceiling run."""
    if "error" in c:
        return f"{c['scenario']:<20} ERROR {c['error'][:100]}"
    return (
        f"{c['scenario']:<20} counted {c['delivered_per_s']:,.0f} frames/s at "
        f"{c['generator_cpu_busy']:.0%} of a core -> ceiling ~{c['ceiling_frames_per_s']:,.0f}"
        f" frames/s ({c['frames_per_write']} frame(s) per read), lost {c['lost']}"
        + (
            f" (noisy: {c['other_load']:.2f} cores busy elsewhere)"
            if c.get("other_load", 0) > NOISE_LIMIT
            else ""
        )
    )


def _machine() -> list[str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    redis_version = subprocess.run(
        [redis_executable(), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()[2:3]

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    libs = ", ".join(
        f"{d} {version(d)}"
        for d in ("gevent", "gunicorn", "Flask", "redis", "orjson", "uvloop", "Flask-SSE")
    )
    return [
        (f"- CPU: {os.cpu_count()} x {model}; memory {mem_gb:.0f} GiB; Linux {platform.release()}"),
        f"- Python {platform.python_version()}; {libs}",
        f"- Redis server {''.join(redis_version).replace('v=', '')} ({redis_executable()})",
    ]


def _row(run: dict) -> str:
    if "error" in run:
        first = run["error"].splitlines()[0][:120].replace("|", "/")
        return f"| {run['scenario']} | {run['server']} | error: {first} |" + " |" * 10
    c, f, lat = run["connections"], run.get("frames", {}), run.get("latency_ms", {})
    pub = run.get("published") or {}
    srv, gen, red = run["server_stats"], run["generator"], run.get("redis_stats")
    pub_text = "–"
    if pub:
        pub_text = (
            f"{pub['accepted']:,}/{pub['scheduled']:,} ({_num(pub['accepted_per_s'])}/s); "
            f"{_num(pub['request_ms']['p50'], 1)} / {_num(pub['request_ms']['p99'], 1)} ms"
        )
    gen_text = f"{gen['cpu_seconds']:.1f} s ({gen['cpu_busy']:.0%})"
    if gen["capped"]:
        gen_text += " **capped**"
    server = run["server"] if run["workers"] == 1 else f"{run['server']} ({run['workers']}w)"
    conns = f"{c['established']:,}/{c['requested']:,}"
    if c["failed"]:
        conns += f" ({c['failed']:,} failed)"
    redis = f"{red['cpu_seconds']:.1f} s / {red['peak_rss_mb']:,.0f} MB" if red else "–"
    late = " (late)" if f.get("lost") and f.get("drain_ended") == "deadline" else ""
    latency = " / ".join(_num(lat.get(k), 1) for k in ("p50", "p90", "p99", "max"))
    cells = [
        run["scenario"],
        server,
        conns,
        pub_text,
        f"{f.get('delivered', 0):,}/{f.get('expected', 0):,}",
        f"{f.get('lost', 0):,}{late} / {f.get('duplicated', 0):,}",
        _num(f.get("delivered_per_s")),
        latency,
        f"{srv['cpu_seconds']:.1f} s ({srv['cpu_busy']:.0%})",
        f"{srv['peak_rss_mb']:,.0f}",
        redis,
        gen_text,
    ]
    return "| " + " | ".join(cells) + " |"


def markdown(
    runs: list[dict], ceilings: list[dict], checks: list[Check], command: str, started: str
) -> str:
    """docs/benchmarks.md for one invocation's results."""
    out = [
        "# Benchmarks",
        "",
        f"Generated on {started} (UTC) by `{command}`.",
        "Every figure below comes from that one invocation; rerun it to regenerate this page.",
        "",
        "## How to run",
        "",
        "<!-- not run: the benchmark suite takes about 25 minutes and wants a quiet machine -->",
        "```sh",
        "make bench                                   # installs bench/requirements.txt, then:",
        ".venv/bin/python -m bench.run --all --write-docs",
        ".venv/bin/python -m bench.run --scenario fanout-1000x20 --server pushservice",
        ".venv/bin/python -m bench.run --ceiling      # the generator's own ceiling only",
        ".venv/bin/python -m bench.run --render bench/results/<time>.json  # page from saved results",
        "```",
        "",
        "Each run starts its own Redis (persistence off) and server on free loopback ports,",
        "stops everything it started by PID, and is bounded in time: a server that falls",
        "behind stops being fed 1.5 x the scenario's duration + 5 s after the start, and",
        "the subscribers wait at most 15 s (or 3 s without a new frame) for the rest.",
        "Full results, with every process's log, go to `bench/results/<time>.json` and",
        "`bench/results/<time>/`. Before each run the runner waits (up to 60 s) until other",
        "processes keep less than 0.3 cores busy; a run during which they used more is run",
        "again (at most 10 repeats per invocation) and the least disturbed result is kept;",
        'one still disturbed is marked noisy under "What limited each run".',
        "",
        "## Machine",
        "",
        *_machine(),
        "- Pinning: the server under test and its Redis on cpu 0, the generator (subscriber",
        "  and publisher processes) on cpu 1 (`taskset -c`), except in the scaling scenarios",
        "  where the 2-worker server may use both cores and the generator is unpinned.",
        "",
        "## Servers",
        "",
        "- **pushservice**: this service, `gunicorn -c gunicorn.conf.py wsgi:app` with gevent",
        "  workers, 1 worker unless stated, its own Redis (persistence off).",
        "- **raw-gevent** (`bench/baselines/raw_gevent.py`): a minimal gevent StreamServer,",
        "  no WSGI and no Redis, one gevent queue per connection, each frame formatted once,",
        "  waiting frames joined into one send: the ceiling a gevent design can approach.",
        "- **flask-sse** (`bench/baselines/flasksse_app.py`): the flask-sse package under",
        "  gunicorn gevent workers with a small publish endpoint: the Python peer users would",
        "  otherwise pick. One Redis Pub/Sub subscription per connection.",
        "- **flask-floor** (`bench/baselines/flask_floor.py`): a do-nothing push endpoint in",
        "  Flask under the same gunicorn gevent worker, access log on; no Redis, validation,",
        "  auth or metrics. Run in the ingest scenarios only: the floor of the stack the",
        "  service is built on, against which its publish figures can be read.",
        "",
        "## Scenarios",
        "",
    ]
    for s in SCENARIOS.values():
        out.append(f"- **{s.name}**: {s.description}.")
    out += [
        "",
        "## Results",
        "",
        _matrix(runs),
        "",
        "## Targets",
        "",
        "| result | target | figure |",
        "|---|---|---|",
        *[f"| {c.status} | {c.target} | {c.figure} |" for c in checks],
        "",
        "A message frame is lost when a connection that should have received it had not",
        "by the end of the run, and duplicated when a connection received it more than once",
        "(each frame's `data.n` is checked per connection against the messages the server",
        'accepted for that connection\'s topic). "(late)" marks lost frames of a run whose',
        "server was still delivering when the wait for them ended: they may be late rather",
        "than gone. A publish request that timed out is not counted as accepted; frames of",
        'such a message that arrive anyway are counted apart ("unexpected" in the JSON).',
        "",
        "Detailed figures. Frames are message frames (heartbeats and the connected frame",
        "excluded); delivered frames/s counts from the first publish to the last frame",
        "received. Latency is end to end: the send time carried in the message against the",
        "time the frame was read. CPU is over the active window (first publish to last frame,",
        "or the holding time), as seconds and as the share of one core; RSS is the peak,",
        "summed over all server processes (gunicorn master and workers). Messages",
        "accepted are those answered 2xx, out of those the schedule held; request p50 / p99",
        "is the publish requests' round trip.",
        "",
        (
            "| scenario | server | connections | messages accepted (rate); request p50 / p99 "
            "| frames delivered/expected "
            "| lost / dup | delivered f/s | latency ms p50 / p90 / p99 / max | server CPU "
            "| server peak RSS MB | redis CPU / RSS | generator CPU |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in runs],
        "",
        "## What limited each run",
        "",
        *[
            f"- {r['scenario']} / {r['server']}: "
            + (f"error: {r['error'].splitlines()[0][:200]}" if "error" in r else r["limited_by"])
            for r in runs
        ],
        "",
        "## The generator's own ceiling",
        "",
        "The subscriber process is asyncio on uvloop with raw protocols: it de-chunks the",
        "response, finds frame ends with `bytes.rfind`, counts frames with `bytes.count`",
        "and pulls every frame's sequence number with one regex per read (latency is parsed",
        "only on sampled connections). Against a blaster that writes as fast as it can",
        "(`bench/ceiling.py`), on the generator's core:",
        "",
        *[f"- {ceiling_line(c)}" for c in ceilings],
        "",
        "Any run whose generator processes used more than 90% of their core is marked",
        "**generator-capped**: its figures may say more about the generator than the server.",
        "",
    ]
    return "\n".join(out)


def _matrix(runs: list[dict]) -> str:
    by = {(r["scenario"], r["server"]): r for r in runs}
    servers = [s for s in SERVERS if any(r["server"] == s for r in runs)]
    scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in runs)]
    lines = [
        "| scenario | " + " | ".join(servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    for name in scenarios:
        cells = []
        for server in servers:
            run = by.get((name, server))
            cells.append("–" if run is None else headline(run))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
