"""Which gunicorn worker class, access log and HTTP parser serve single sends best.

Run: ``.venv/bin/python -m bench.stack_options [--rounds 3] [--seconds 8]``

Each variant is the service (or the do-nothing Flask floor) under one change of its
gunicorn stack, on core 0 with its Redis; 32 publishers that each wait for their answer
send single messages from core 1 (``bench.publisher --mode closed``), no subscriber. The
variants run in turn, round after round, so that a slower minute of the machine falls on
all of them alike. Prints one JSON line per run, then per variant: the median msg/s, the
server's CPU per request (µs), and the median as a ratio of the service's defaults (or,
for the floor, of the floor's defaults) measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstat
from bench.servers import (
    HOST,
    PYTHON,
    ROOT,
    Adjust,
    ServerSpec,
    needs_redis,
    start_redis,
    start_server,
    taskset,
)

# gunicorn's own default access-log format, beside the service's shorter line.
GUNICORN_ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "pushservice" or "flask-floor"
    options: tuple[str, ...] = ()  # gunicorn command-line options added
    env: dict[str, str] = field(default_factory=dict)
    access_log: bool = True


VARIANTS = (
    Variant("service defaults", "pushservice"),
    Variant("service, python HTTP parser", "pushservice", ("--http-parser", "python")),
    Variant("service, gunicorn's access-log format", "pushservice",
            ("--access-logformat", GUNICORN_ACCESS_FORMAT)),
    Variant("service, no access log", "pushservice", access_log=False),
    Variant("service, gevent_pywsgi worker", "pushservice", ("-k", "gevent_pywsgi")),
    Variant("service, no rate limiter", "pushservice", env={"PUBLISH_RATE_PER_SERVICE": "0"}),
    Variant("floor defaults", "flask-floor"),
    Variant("floor, python HTTP parser", "flask-floor", ("--http-parser", "python")),
    Variant("floor, no access log", "flask-floor", access_log=False),
    Variant("floor, gevent_pywsgi worker", "flask-floor", ("-k", "gevent_pywsgi")),
)


def _adjust(variant: Variant, folder: Path) -> Adjust:
    """What puts the variant's change into the server's command line and environment:
    its options go before the app argument."""

    def adjust(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        argv = list(argv)
        if not variant.access_log:
            if variant.kind == "pushservice":
                # gunicorn.conf.py logs to stdout; a config that reads it, then turns it off.
                config = folder / "no_access_log.py"
                config.write_text(f"exec(open({str(ROOT / 'gunicorn.conf.py')!r}).read())\n"
                                  "accesslog = None\n")
                argv[argv.index("gunicorn.conf.py")] = str(config)
            else:
                at = argv.index("--access-logfile")
                del argv[at:at + 2]
        return [*argv[:-1], *variant.options, argv[-1]], {**env, **variant.env}

    return adjust


def run_once(variant: Variant, seconds: float, connections: int, folder: Path) -> dict:
    redis_proc = redis_port = server = None
    try:
        if needs_redis(variant.kind):
            redis_proc, redis_port = start_redis("0", folder)
        spec = ServerSpec(variant.kind, cores="0", rate_limit=True)
        server, port = start_server(spec, redis_port, folder, adjust=_adjust(variant, folder))
        groups = [procstat.ProcessGroup("server", [server.pid])]
        if redis_proc is not None:
            groups.append(procstat.ProcessGroup("redis", [redis_proc.pid]))
        for group in groups:
            group.mark()
        publisher = subprocess.run(
            taskset("1", [PYTHON, "-m", "bench.publisher", "--host", HOST, "--port", str(port),
                          "--mode", "closed", "--connections", str(connections),
                          "--services", str(connections), "--duration-s", str(seconds)]),
            cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, check=True)
        for group in groups:
            group.sample()
        report = json.loads(publisher.stdout.strip().splitlines()[-1])
    finally:
        if server is not None:
            server.stop()
        if redis_proc is not None:
            redis_proc.stop()
    accepted = report["accepted"]
    cpu = {group.name: sum(group.cpu_window().values()) for group in groups}
    return {"variant": variant.name, "accepted_per_s": report["accepted_per_s"],
            "requests": report["requests"],
            "server_cpu_us_per_request": round(cpu["server"] / max(1, accepted) * 1e6),
            "redis_cpu_us_per_request": (round(cpu["redis"] / max(1, accepted) * 1e6)
                                         if "redis" in cpu else None)}


def summarize(runs: list[dict]) -> list[dict]:
    """Per variant: medians, and the median msg/s as a ratio of its kind's defaults."""
    by_variant: dict[str, list[dict]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    medians = {name: statistics.median(r["accepted_per_s"] for r in found)
               for name, found in by_variant.items()}
    rows = []
    for variant in VARIANTS:
        found = by_variant.get(variant.name)
        if not found:
            continue
        base = "service defaults" if variant.kind == "pushservice" else "floor defaults"
        rows.append({
            "variant": variant.name,
            "msg_per_s": [round(r["accepted_per_s"]) for r in found],
            "median": round(medians[variant.name]),
            "server_cpu_us_per_request": round(statistics.median(
                r["server_cpu_us_per_request"] for r in found)),
            f"x {base}": round(medians[variant.name] / medians[base], 2)
            if base in medians else None,
        })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", action="append", default=[],
                        help="run only variants whose name contains this (repeatable)")
    args = parser.parse_args(argv)
    chosen = [v for v in VARIANTS if not args.only or any(o in v.name for o in args.only)]
    runs = []
    with tempfile.TemporaryDirectory(prefix="stack-options-") as folder:
        for round_number in range(args.rounds):
            for variant in chosen:
                run = run_once(variant, args.seconds, args.connections,
                               Path(folder) / f"{round_number}-{len(runs)}")
                run["round"] = round_number + 1
                runs.append(run)
                print(json.dumps(run), flush=True)
    for row in summarize(runs):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
