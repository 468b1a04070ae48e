"""A reconnect storm: every client arriving in the same instant, as after a deploy or a
load-balancer failover, against one worker, beside a raw gevent server in the same run.

Run: ``.venv/bin/python -m bench.storm [--connections 10000] [--resume]``

The generator opens every connection at once (no pacing; two processes on cpu 1, the
server and its Redis on cpu 0) and reports how many were refused (a refusal stream that
told the client to come back; it is followed as EventSource does) or failed, and the time
until every one of them was streaming (its ``connected`` frame arrived). With
``--resume`` the stream first holds 100,000 entries and the service is restarted, as in a
deploy; every client then carries a Last-Event-ID among the newest 1,000 entries, as
clients that were connected until the restart do. Prints JSON, with the ratio of the
service's time to raw gevent's (target: at most 3) and the refusals (target: 0).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.runner import Child
from bench.scenarios import MAX_CONNECTIONS_PER_PROCESS
from bench.servers import (
    HOST,
    PYTHON,
    ServerSpec,
    missing_bench_dependencies,
    start_redis,
    start_server,
    taskset,
)

SERVER_CORES, GENERATOR_CORES = "0", "1"
PATH = "/sse/stream/storm"
PREFILL = 100_000
RESUME_WINDOW = 1_000


def _post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://{HOST}:{port}{path}",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def prefill(port: int, total: int, keep: int) -> list[str]:
    """Publish ``total`` messages in batches; return the event ids of the last ``keep``."""
    ids: list[str] = []
    for start in range(0, total, 1000):
        batch = [{"type": "info", "service": "storm", "target": {"channel": "elsewhere"},
                  "data": {"n": n}} for n in range(start, min(total, start + 1000))]
        results = _post(port, "/api/v1/messages/batch", {"messages": batch})["results"]
        ids.extend(result["event_id"] for result in results)
    return ids[-keep:]


def storm(port: int, connections: int, ids_file: str, log_dir: Path) -> dict:
    processes = max(2, math.ceil(connections / MAX_CONNECTIONS_PER_PROCESS))
    size = math.ceil(connections / processes)
    children = []
    for k in range(processes):
        count = min(size, connections - k * size)
        argv = taskset(GENERATOR_CORES, [
            PYTHON, "-m", "bench.subscribers", "--host", HOST, "--port", str(port),
            "--path", PATH, "--topic", "storm", "--first", str(k * size),
            "--count", str(count), "--sample-every", "0", "--concurrency", str(count),
            "--last-event-ids", ids_file])
        children.append(Child(f"storm-{k}", argv, log_dir))
    try:
        reports = [child.read(timeout_s=300) for child in children]
    finally:
        for child in children:
            child.stop()
    started = min(report["started_at"] for report in reports)
    refusals: dict[str, int] = {}
    failures: dict[str, int] = {}
    for report in reports:
        for name, count in report["refusals"].items():
            refusals[name] = refusals.get(name, 0) + count
        for name, count in report["failures"].items():
            failures[name] = failures.get(name, 0) + count
    return {
        "established": sum(report["established"] for report in reports),
        "refused": sum(refusals.values()),
        "refusals": refusals,
        "failed": sum(report["failed"] for report in reports),
        "failures": failures,
        "seconds_until_all_streaming": round(
            max(report["started_at"] + report["seconds"] for report in reports) - started, 3),
    }


def measure(kind: str, connections: int, resume: bool) -> dict:
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-storm-{kind}-"))
    redis_proc = server = None
    try:
        redis_port = None
        if kind == "pushservice":
            redis_proc, redis_port = start_redis(SERVER_CORES, log_dir)
        spec = ServerSpec(kind, workers=1, heartbeat_s=30.0, cores=SERVER_CORES)
        server, port = start_server(spec, redis_port, log_dir)
        ids: list[str] = []
        if resume and kind == "pushservice":
            ids = prefill(port, PREFILL, RESUME_WINDOW)
            server.stop()  # a deploy: a fresh worker meets the crowd
            server, port = start_server(spec, redis_port, log_dir)
        ids_file = log_dir / "last-event-ids.txt"
        ids_file.write_text("\n".join(ids))
        time.sleep(1.0)  # let the fresh server settle
        result = storm(port, connections, str(ids_file) if ids else "", log_dir)
        result["server"] = kind
        result["resume"] = bool(ids)
        return result
    finally:
        if server is not None:
            server.stop()
        if redis_proc is not None:
            redis_proc.stop()
        shutil.rmtree(log_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--resume", action="store_true",
                        help="clients carry a Last-Event-ID into a stream of 100,000 entries")
    args = parser.parse_args()
    missing = missing_bench_dependencies([])
    if missing:
        parser.error(missing)
    ours = measure("pushservice", args.connections, args.resume)
    ceiling = measure("raw-gevent", args.connections, False)
    ratio = ours["seconds_until_all_streaming"] / max(ceiling["seconds_until_all_streaming"],
                                                       1e-9)
    print(json.dumps({
        "connections": args.connections,
        "pushservice": ours,
        "raw_gevent": ceiling,
        "time_vs_raw_gevent": round(ratio, 2),
        "targets": {"refused": "0", "time_vs_raw_gevent": "<= 3"},
        "command": f".venv/bin/python -m bench.storm --connections {args.connections}"
                   + (" --resume" if args.resume else ""),
    }, indent=2))


if __name__ == "__main__":
    main()
