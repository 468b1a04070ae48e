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
from bench.procstat import NOISE_LIMIT
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
# Before each run the runner waits up to QUIET_WAIT_S for the machine to calm down.
QUIET_WAIT_S = 60.0
_quiet_budget = {"seconds": 600.0}  # for the whole invocation, so it stays bounded


def set_quiet_budget(seconds: float) -> None:
    """Cap the time all runs of this invocation may spend waiting for a quiet machine."""
    _quiet_budget["seconds"] = max(0.0, seconds)


def wait_for_quiet() -> float:
    """Wait until other processes keep less than NOISE_LIMIT cores busy, at most
    QUIET_WAIT_S (and at most what is left of the invocation's budget); return the load."""
    started = time.time()
    deadline = started + min(QUIET_WAIT_S, _quiet_budget["seconds"])
    while True:
        load = procstat.other_load(1.0, [os.getpid()])
        if load < NOISE_LIMIT or time.time() > deadline:
            _quiet_budget["seconds"] = max(0.0, _quiet_budget["seconds"] - (time.time() - started))
            return load


class Child:
    """A generator process that talks JSON lines over its stdin and stdout."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
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


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


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
            "--max-connections",
            str(scn.publishers if scn.closed_loop else 64),
            "--batch",
            str(scn.batch),
            "--window-ms",
            str(scn.window_ms),
            "--target",
            scn.target,
            "--targets",
            str(scn.targets),
            "--services",
            str(scn.services),
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


def limited_by(r: dict, scn: Scenario) -> str:
    """What most likely bounded this run, from its own figures."""
    server_cores = len(scn.server_cores.split(",")) if scn.server_cores else 2
    srv = r["server_stats"]
    reasons = []
    if r["generator"]["capped"]:
        reasons.append("generator CPU (generator-capped)")
    # The average is diluted by quiet stretches; a saturated second counts too.
    if srv["cpu_busy"] >= 0.85 * server_cores or (
        srv["cpu_busy"] >= 0.6 * server_cores and srv["busiest_second"] >= 0.95 * server_cores
    ):
        reasons.append(
            f"server CPU ({srv['cpu_busy']:.2f} of {server_cores} core(s) on average, "
            f"{srv['busiest_second']:.2f} in the busiest second)"
        )
    red = r.get("redis_stats")
    if red and red["busiest_second"] >= 0.9:
        reasons.append(f"redis CPU ({red['busiest_second']:.2f} at its busiest)")
    elif (
        red
        and (srv["cpu_busy"] + red["cpu_busy"] >= 0.9 * server_cores)
        and not any(x.startswith("server CPU") for x in reasons)
    ):
        # The service and its Redis share the server's core(s): together they filled it.
        reasons.append(
            f"server core(s) full: service {srv['cpu_busy']:.2f} + its Redis "
            f"{red['cpu_busy']:.2f} of {server_cores}"
        )
    if not scn.server_cores or not scn.generator_cores:
        # Unpinned, everything shares the machine's cores.
        cores = os.cpu_count() or 1
        used = srv["cpu_busy"] + (red["cpu_busy"] if red else 0) + r["generator"]["cpu_busy"]
        if used >= 0.9 * cores:
            reasons.append(
                f"all {cores} cores full (server {srv['cpu_busy']:.2f}, redis "
                f"{red['cpu_busy'] if red else 0:.2f}, generator {r['generator']['cpu_busy']:.2f})"
            )
    conns = r["connections"]
    if conns["failed"]:
        top = max(conns["failures"].items(), key=lambda kv: kv[1], default=("", 0))[0]
        reasons.append(f"{conns['failed']:,} connections failed ({top})")
    frames = r.get("frames") or {}
    if frames.get("lost") and frames.get("drain_ended") == "deadline":
        reasons.append(
            f"{frames['lost']:,} frames still undelivered when the wait for them ended "
            "(server far behind)"
        )
    elif frames.get("lost"):
        reasons.append(f"{frames['lost']:,} frames lost")
    pub = r.get("published") or {}
    if pub.get("errors"):
        reasons.append(f"{sum(pub['errors'].values()):,} publish requests failed")
    if scn.mode == "rate" and pub.get("max_schedule_slip_ms", 0) > 500:
        reasons.append(
            f"publish requests too slow for the rate (schedule slipped "
            f"{pub['max_schedule_slip_ms'] / 1000:.1f} s)"
        )
    if not reasons and scn.mode == "closed":
        reasons.append(
            f"request round trips: {scn.publishers} publishers each wait for their answer "
            f"(p50 {pub.get('request_ms', {}).get('p50', 0):.1f} ms), no CPU saturated"
        )
    if r.get("other_load", 0) > NOISE_LIMIT:
        reasons.append(f"other load on the machine ({r['other_load']:.2f} cores: noisy)")
    if not reasons:
        reasons.append("nothing saturated: the server kept up with the offered load")
    return "; ".join(reasons)


def run_one(scn: Scenario, kind: str, log_dir: Path) -> dict:
    """Run ``scn`` against server ``kind``; never raises for a server's failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    load_before = wait_for_quiet()
    started = time.time()
    result: dict = {
        "scenario": scn.name,
        "server": kind,
        "workers": scn.workers,
        "pinning": scn.pinning,
        "description": scn.description,
        "other_load_before": round(load_before, 3),
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
        spec = ServerSpec(kind, scn.workers, scn.heartbeat_s, scn.server_cores,
                          rate_limit=scn.services > 1)
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
        machine_start = procstat.machine_busy_seconds()
        own_start = _own_cpu()
        sampler = Sampler(groups)
        sampler.start()
        window_start = time.time()
        expect: dict = {}
        uncertain: dict = {}
        if scn.mode == "idle":
            time.sleep(scn.duration_s)
        else:
            pub = Child("publisher", _publisher_argv(scn, port), log_dir)
            groups[1].roots.append(pub.popen.pid)
            report = pub.read(timeout_s=scn.duration_s + 120)
            expect = report.pop("expect")
            uncertain = report.pop("uncertain", {})
            result["published"] = report
        drain_deadline = max(15.0, scn.duration_s)
        for child in subs:
            child.send(
                {
                    "cmd": "drain",
                    "expect": expect,
                    "uncertain": uncertain,
                    "deadline_s": drain_deadline,
                    "quiet_s": 3.0,
                }
            )
        res = [child.read(timeout_s=drain_deadline + 60) for child in subs]
        window_end = time.time()
        sampler.finish()
        machine = procstat.machine_busy_seconds() - machine_start
        ours = sum(sum(g.cpu_window().values()) for g in groups) + _own_cpu() - own_start
        result["other_load"] = round(max(0.0, machine - ours) / (window_end - window_start), 3)
        result.update(
            _summarise(
                scn, conns, res, result.get("published"), groups, sampler, window_start, window_end
            )
        )
        result["limited_by"] = limited_by(result, scn)
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
    if scn.mode == "idle":
        active_end = window_end
    active = max(active_end - first_pub, 1e-3)
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
    # "deadline": frames were still arriving when the wait ended, so "lost" ones may be late.
    ends = {r.get("drain_ended", "complete") for r in res}
    frames["drain_ended"] = (
        "deadline" if "deadline" in ends else ("quiet" if "quiet" in ends else "complete")
    )
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
    # Pinned, the generator's processes share one core; unpinned, each may use a core.
    busiest_process = max(by["generator"].cpu_window().values(), default=0.0) / active
    gen["busiest_process"] = round(busiest_process, 3)
    gen["capped"] = (
        gen["cpu_busy"] > GENERATOR_CAP * (1 if scn.generator_cores else (os.cpu_count() or 1))
        or busiest_process > GENERATOR_CAP
    )
    out = {
        "connections": conns,
        "frames": frames,
        "latency_ms": _percentiles(latencies),
        "heartbeats": {
            "total": sum(r["comments"] for r in res),
            "min_per_connection": min((r["comments_min"] for r in res), default=0),
        },
        "active_seconds": round(active, 2),
        "server_stats": cpu("server"),
        "generator": gen,
    }
    if "redis" in by:
        out["redis_stats"] = cpu("redis")
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
        blast = procstat.ProcessGroup("blaster", [blaster.popen.pid])
        gen.mark()
        blast.mark()
        machine_start, own_start, started = procstat.machine_busy_seconds(), _own_cpu(), time.time()
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
        blast.sample()
        cpu = sum(gen.cpu_window().values())
        ours = cpu + sum(blast.cpu_window().values()) + _own_cpu() - own_start
        machine = procstat.machine_busy_seconds() - machine_start
        result["other_load"] = round(max(0.0, machine - ours) / (time.time() - started), 3)
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
