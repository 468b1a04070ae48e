"""CPU time and memory of processes, read from /proc (Linux only)."""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")
# Cores kept busy by processes outside a run beyond which the run counts as noisy.
NOISE_LIMIT = 0.30


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by ``pid``; 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    # The command name may contain spaces; fields after it are fixed.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _status_kb(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` now, in bytes; 0 once it is gone."""
    return _status_kb(pid, b"VmRSS:") * 1024


def peak_rss_bytes(pid: int) -> int:
    """Highest resident set size ``pid`` has had (VmHWM), in bytes; 0 once it is gone."""
    return _status_kb(pid, b"VmHWM:") * 1024


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if os.path.exists(f"/proc/{current}"):
            found.append(current)
            todo.extend(parents.get(current, ()))
    return found


class ProcessGroup:
    """A named set of processes (a root PID and its descendants) measured together."""

    def __init__(self, name: str, roots: list[int]) -> None:
        self.name = name
        self.roots = list(roots)
        self._cpu: dict[int, float] = {}
        self._cpu_start: dict[int, float] = {}
        self.peak_rss_sum = 0

    def pids(self) -> list[int]:
        """Every live process of the group now."""
        seen: list[int] = []
        for root in self.roots:
            for pid in descendants(root):
                if pid not in seen:
                    seen.append(pid)
        return seen

    def sample(self) -> None:
        """Record CPU times and the current RSS sum (keeps the highest sum seen)."""
        total = 0
        for pid in self.pids():
            self._cpu[pid] = cpu_seconds(pid) or self._cpu.get(pid, 0.0)
            total += rss_bytes(pid)
        self.peak_rss_sum = max(self.peak_rss_sum, total)

    def mark(self) -> None:
        """Start the CPU window here."""
        self.sample()
        self._cpu_start = dict(self._cpu)

    def cpu_window(self) -> dict[int, float]:
        """CPU seconds per process since mark(), as of the last sample()."""
        return {pid: cpu - self._cpu_start.get(pid, 0.0) for pid, cpu in self._cpu.items()}

    def peak_rss_hwm_sum(self) -> int:
        """Sum of each live process's own peak RSS (VmHWM), in bytes."""
        return sum(peak_rss_bytes(pid) for pid in self.pids())


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have spent running (all cores).

    Interrupt and softirq time is left out: on loopback it is mostly the measured
    processes' own network traffic, which no process is charged for.
    """
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + steal) / _TICKS


def other_load(seconds: float, exclude: list[int]) -> float:
    """Cores kept busy over ``seconds`` by processes other than ``exclude`` and their
    descendants."""
    import time

    pids = [p for root in exclude for p in descendants(root)]
    before_all = machine_busy_seconds()
    before = sum(cpu_seconds(p) for p in pids)
    time.sleep(seconds)
    after_all = machine_busy_seconds()
    after = sum(cpu_seconds(p) for p in pids)
    return max(0.0, (after_all - before_all) - (after - before)) / seconds
