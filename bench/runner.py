"""Runs one scenario against one server and returns its result as a JSON-ready dict.

Order of a run: Redis (when the server needs it) and the server start pinned to the
server's cores; the subscriber processes start pinned to the generator's cores and report
once every connection is established (or failed); CPU windows start; the publisher runs
(or, for an idle scenario, the connections are held); the subscribers are told what each
topic should have received and drain; CPU windows end; everything is stopped by PID.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import threading
import time
from pathlib import Path

from bench import procstat
from bench.scenarios import Scenario
from bench.servers import (
    HOST,
    PYTHON,
    ROOT,
    Process,
    ServerSpec,
    needs_redis,
    start_redis,
    start_server,
    taskset,
)

GENERATOR_CAP = 0.90  # a generator busier than this (of one core) may be the bottleneck


class Child:
    """A generator process that talks JSON lines over its stdin and stdout."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self._log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.popen.stdout, selectors.EVENT_READ)

    def send(self, obj: dict) -> None:
        """Write one command line."""
        self.popen.stdin.write(json.dumps(obj).encode() + b"\n")
        self.popen.stdin.flush()

    def read(self, timeout_s: float) -> dict:
        """The next JSON line it prints; raises TimeoutError or RuntimeError (it exited)."""
        deadline = time.time() + timeout_s
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no report in {timeout_s:.0f}s")
            if not self._sel.select(min(left, 1.0)):
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"{self.name} exited (see its log)")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask it to stop, then kill it by PID if it does not."""
        try:
            if self.popen.poll() is None:
                self.send({"cmd": "stop"})
                self.popen.stdin.close()
                self.popen.wait(timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        self._sel.close()
        self.popen.stdout.close()
        self._log.close()


class Sampler(threading.Thread):
    """Samples the process groups every ``period_s``; keeps peak RSS and busiest second."""

    def __init__(self, groups: list[procstat.ProcessGroup], period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.period_s = period_s
        self.series: dict[str, list[tuple[float, float]]] = {g.name: [] for g in groups}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.period_s):
            self.sample()

    def sample(self) -> None:
        now = time.time()
        for g in self.groups:
            g.sample()
            self.series[g.name].append((now, sum(g.cpu_window().values())))

    def finish(self) -> None:
        """Stop sampling after one last sample."""
        self._halt.set()
        self.join(5)
        self.sample()

    def busiest_second(self, name: str, start: float, end: float) -> float:
        """The highest CPU use of group ``name`` over any 1 s between start and end, in cores."""
        points = [(t, c) for t, c in self.series[name] if start - 1 <= t <= end + 0.5]
        best = 0.0
        j = 0
        for i in range(len(points)):
            while points[i][0] - points[j][0] > 1.0:
                j += 1
            if i > j and points[i][0] - points[j][0] >= 0.75:
                rate = (points[i][1] - points[j][1]) / (points[i][0] - points[j][0])
                best = max(best, rate)
        return best


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "samples": 0}
    values = sorted(values)

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(values[-1] * 1000, 2),
        "samples": len(values),
    }


def _subscriber_argv(scn: Scenario, port: int, first: int, count: int) -> list[str]:
    return taskset(
        scn.generator_cores,
        [
            PYTHON,
            "-m",
            "bench.subscribers",
            "--host",
            HOST,
            "--port",
            str(port),
            "--path",
            scn.path,
            "--topic",
            scn.topic,
            "--first",
            str(first),
            "--count",
            str(count),
            "--sample-every",
            str(scn.sample_every),
        ],
    )


def _publisher_argv(scn: Scenario, port: int) -> list[str]:
    return taskset(
        scn.generator_cores,
        [
            PYTHON,
            "-m",
            "bench.publisher",
            "--host",
            HOST,
            "--port",
            str(port),
            "--mode",
            scn.mode,
            "--rate",
            str(scn.rate),
            "--duration-s",
            str(scn.duration_s),
            "--connections",
            str(scn.publishers),
            "--batch",
            str(scn.batch),
            "--target",
            scn.target,
            "--targets",
            str(scn.targets),
        ],
    )


def _split(total: int, parts: int) -> list[tuple[int, int]]:
    size, extra = divmod(total, parts)
    out, first = [], 0
    for k in range(parts):
        count = size + (1 if k < extra else 0)
        out.append((first, count))
        first += count
    return out


def _limited_by(r: dict, scn: Scenario) -> str:
    """What most likely bounded this run, from its own figures."""
    server_cores = len(scn.server_cores.split(",")) if scn.server_cores else 2
    reasons = []
    if r["generator"]["capped"]:
        reasons.append("generator CPU (generator-capped)")
    if r["server"]["cpu_busy"] >= 0.85 * server_cores:
        reasons.append(f"server CPU ({r['server']['cpu_busy']:.2f} of {server_cores} core(s))")
    if r.get("redis") and r["redis"]["cpu_busy"] >= 0.85:
        reasons.append("redis CPU")
    conns = r["connections"]
    if conns["failed"]:
        reasons.append(f"{conns['failed']} connections failed")
    if r.get("frames") and r["frames"]["lost"]:
        reasons.append(f"{r['frames']['lost']} frames lost")
    pub = r.get("published") or {}
    if scn.mode == "rate" and pub.get("max_schedule_slip_ms", 0) > 500:
        reasons.append(f"publish path (schedule slipped {pub['max_schedule_slip_ms']:.0f} ms)")
    if not reasons:
        reasons.append("nothing saturated (offered load)")
    return "; ".join(reasons)


def run_one(scn: Scenario, kind: str, log_dir: Path) -> dict:
    """Run ``scn`` against server ``kind``; never raises for a server's failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result: dict = {
        "scenario": scn.name,
        "server": kind,
        "workers": scn.workers,
        "pinning": scn.pinning,
        "description": scn.description,
    }
    if scn.generator_cores:
        os.sched_setaffinity(0, {int(c) for c in scn.generator_cores.split(",")})
    else:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    redis: Process | None = None
    server: Process | None = None
    subs: list[Child] = []
    pub: Child | None = None
    sampler: Sampler | None = None
    try:
        redis_port = None
        if needs_redis(kind):
            redis, redis_port = start_redis(scn.server_cores, log_dir)
        spec = ServerSpec(kind, scn.workers, scn.heartbeat_s, scn.server_cores)
        server, port = start_server(spec, redis_port, log_dir)
        result["server_command"] = " ".join(server.argv)
        for k, (first, count) in enumerate(_split(scn.subscribers, scn.processes)):
            subs.append(
                Child(f"subscribers-{k}", _subscriber_argv(scn, port, first, count), log_dir)
            )
        est = [child.read(timeout_s=180) for child in subs]
        conns = {
            "requested": scn.subscribers,
            "established": sum(e["established"] for e in est),
            "failed": sum(e["failed"] for e in est),
            "seconds_to_establish": max(e["seconds"] for e in est),
            "failures": {},
        }
        for e in est:
            for why, n in e["failures"].items():
                conns["failures"][why] = conns["failures"].get(why, 0) + n
        groups = [
            procstat.ProcessGroup("server", [server.pid]),
            procstat.ProcessGroup("generator", [c.popen.pid for c in subs]),
        ]
        if redis:
            groups.append(procstat.ProcessGroup("redis", [redis.pid]))
        for g in groups:
            g.mark()
        sampler = Sampler(groups)
        sampler.start()
        window_start = time.time()
        expect: dict = {}
        if scn.mode == "idle":
            time.sleep(scn.duration_s)
        else:
            pub = Child("publisher", _publisher_argv(scn, port), log_dir)
            groups[1].roots.append(pub.popen.pid)
            report = pub.read(timeout_s=scn.duration_s + 120)
            expect = report.pop("expect")
            result["published"] = report
        drain_deadline = max(15.0, scn.duration_s)
        for child in subs:
            child.send(
                {"cmd": "drain", "expect": expect, "deadline_s": drain_deadline, "quiet_s": 3.0}
            )
        res = [child.read(timeout_s=drain_deadline + 60) for child in subs]
        window_end = time.time()
        sampler.finish()
        result.update(
            _summarise(
                scn, conns, res, result.get("published"), groups, sampler, window_start, window_end
            )
        )
        result["limited_by"] = _limited_by(result, scn)
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        result["error"] = str(exc)[:2000]
        if server is not None and not server.alive():
            result["error"] += "\n" + server.log_tail()
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.finish()
        if pub is not None:
            pub.stop()
        for child in subs:
            child.stop()
        if server is not None:
            server.stop()
        if redis is not None:
            redis.stop()
    result["wall_seconds"] = round(time.time() - started, 1)
    return result


def _summarise(scn, conns, res, published, groups, sampler, window_start, window_end) -> dict:
    by = {g.name: g for g in groups}
    first_pub = (published or {}).get("t_first") or window_start
    last_frame = max((r["last_frame_at"] for r in res), default=0.0)
    # The busy part of the window: publishing start to the last frame (not the quiet wait).
    active_end = max(last_frame, (published or {}).get("t_last") or 0.0)
    active = max(active_end - first_pub, 1e-3) if scn.mode != "idle" else window_end - window_start
    conns = dict(conns)
    conns["held"] = sum(r["held"] for r in res)
    conns["closed_early"] = sum(r["closed_early"] for r in res)
    reasons: dict = {}
    for r in res:
        for why, n in r["close_reasons"].items():
            reasons[why] = reasons.get(why, 0) + n
    conns["close_reasons"] = reasons
    frames = {
        key: sum(r[key] for r in res)
        for key in ("expected", "delivered", "lost", "duplicated", "unexpected", "unparsed")
    }
    frames["delivered_per_s"] = (
        round(frames["delivered"] / max(last_frame - first_pub, 1e-3), 1)
        if frames["delivered"]
        else 0.0
    )
    latencies = [x for r in res for x in r["latencies"]]

    def cpu(name: str) -> dict:
        g = by[name]
        per = g.cpu_window()
        total = sum(per.values())
        return {
            "cpu_seconds": round(total, 2),
            "cpu_busy": round(total / active, 3),  # cores used on average while active
            "busiest_second": round(sampler.busiest_second(name, first_pub, active_end), 3),
            "peak_rss_mb": round(max(g.peak_rss_sum, g.peak_rss_hwm_sum()) / 2**20, 1),
            "processes": len(per),
        }

    gen = cpu("generator")
    gen["capped"] = gen["cpu_busy"] > GENERATOR_CAP * (1 if scn.generator_cores else 2)
    out = {
        "connections": conns,
        "frames": frames,
        "latency_ms": _percentiles(latencies),
        "heartbeats": {
            "total": sum(r["comments"] for r in res),
            "min_per_connection": min((r["comments_min"] for r in res), default=0),
        },
        "active_seconds": round(active, 2),
        "server": cpu("server"),
        "generator": gen,
    }
    if "redis" in by:
        out["redis"] = cpu("redis")
    return out


def run_ceiling(
    frames_per_write: int, log_dir: Path, connections: int = 1000, duration_s: float = 5.0
) -> dict:
    """Measure how many frames/s the subscriber process counts per core it uses.

    The blaster (bench.ceiling) runs on cpu 0, the subscribers on cpu 1, as in the
    pinned scenarios.
    """
    from bench.servers import free_port

    log_dir.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {1})
    port = free_port()
    name = f"ceiling-x{frames_per_write}"
    result: dict = {
        "scenario": name,
        "server": "blaster",
        "connections": connections,
        "frames_per_write": frames_per_write,
    }
    blaster = Child(
        name + "-blaster",
        taskset(
            "0",
            [
                PYTHON,
                "-m",
                "bench.ceiling",
                "--host",
                HOST,
                "--port",
                str(port),
                "--connections",
                str(connections),
                "--duration-s",
                str(duration_s),
                "--frames-per-write",
                str(frames_per_write),
            ],
        ),
        log_dir,
    )
    subs: Child | None = None
    try:
        blaster.read(timeout_s=30)
        scn = Scenario(
            name=name, description="", subscribers=connections, rate=1e9, duration_s=duration_s
        )
        subs = Child(name + "-subscribers", _subscriber_argv(scn, port, 0, connections), log_dir)
        est = subs.read(timeout_s=60)
        gen = procstat.ProcessGroup("generator", [subs.popen.pid])
        gen.mark()
        sent = blaster.read(timeout_s=duration_s + 120)
        subs.send(
            {
                "cmd": "drain",
                "expect": {"c1": list(range(sent["frames"]))},
                "deadline_s": 30,
                "quiet_s": 2,
            }
        )
        res = subs.read(timeout_s=90)
        gen.sample()
        cpu = sum(gen.cpu_window().values())
        span = max(res["last_frame_at"] - sent["t_first"], 1e-3)
        fps = res["delivered"] / span
        busy = cpu / span
        result.update(
            {
                "established": est["established"],
                "delivered": res["delivered"],
                "expected": res["expected"],
                "lost": res["lost"],
                "delivered_per_s": round(fps, 1),
                "generator_cpu_busy": round(busy, 3),
                "ceiling_frames_per_s": round(fps / max(busy, 1e-3), 1),
            }
        )
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        result["error"] = str(exc)[:2000]
    finally:
        if subs is not None:
            subs.stop()
        blaster.stop(timeout_s=2)
    return result
