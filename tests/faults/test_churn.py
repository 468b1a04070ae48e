"""Churn: thousands of streams opened and closed, in batches (two thirds hang up after
their greeting, one third right after sending the request, before any answer). Afterwards
every worker is back where it started: its open file descriptors, its client sockets, the
instance's connection count and the registry's entries; memory is recorded."""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from tests.faults.conftest import open_fds, rss_mb
from tests.support.sse_client import SSEClient
from tests.support.waiting import wait_until

CYCLES = 3000
BATCH = 100
WARM_UP = 300


def _sockets(pid: int, port: int, redis_port: int) -> tuple[int, int]:
    """The process's sockets for its clients (connections to ``port``, any state but
    listening) and for Redis (connections to ``redis_port``)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    clients = redis = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[9] not in inodes:
                    continue
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                clients += local_port == port and fields[3] != "0A"
                redis += remote_port == redis_port
    return clients, redis


def _cycle(url: str, number: int) -> bool:
    """Open a stream and hang up: after its greeting, or (every third) at once."""
    if number % 3 == 2:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                         "Accept: text/event-stream\r\n\r\n".encode())
        return True
    with SSEClient(url, timeout=30) as client:
        return client.wait_for(lambda frame: frame.event == "connected", 30) is not None


def _churn(url: str, count: int) -> None:
    with ThreadPoolExecutor(BATCH) as pool:
        for start in range(0, count, BATCH):
            numbers = range(start, min(count, start + BATCH))
            assert all(pool.map(_cycle, [url] * len(numbers), numbers))


def _state(instance) -> dict:
    """Each worker's descriptors (those that are not its pooled Redis connections, whose
    number may grow with load, up to the pool's size) and memory, the instance's client
    sockets and Redis connections, its connection count and the registry's (asked on
    connections closed after each answer, so that none of them stays open)."""
    close = {"Connection": "close"}
    listed = requests.get(instance.url("/api/v1/connections"), params={"limit": 1000},
                          headers=close, timeout=10).json()["count"]
    health = requests.get(instance.url("/health"), headers=close, timeout=10).json()
    redis_port = urlsplit(instance.redis_url).port
    state: dict = {"fds": {}, "client_sockets": 0, "redis_connections": 0,
                   "connections": health["connections"]["instance"], "registry": listed,
                   "rss_mb": {}}
    for pid in instance.worker_pids():
        clients, redis = _sockets(pid, instance.port, redis_port)
        state["fds"][pid] = open_fds(pid) - redis
        state["client_sockets"] += clients
        state["redis_connections"] += redis
        state["rss_mb"][pid] = rss_mb(pid)
    return state


@pytest.mark.timeout(150)
def test_thousands_of_connect_close_cycles_leave_nothing_behind(service, figures):
    instance = service(workers=2)
    url = instance.url("/sse/stream/churn")
    # A first round opens what a worker keeps for good (Redis connections, greenlet pool).
    _churn(url, WARM_UP)

    def settled() -> dict | None:
        state = _state(instance)
        return state if state["connections"] == state["registry"] == \
            state["client_sockets"] == 0 else None

    baseline = wait_until(settled, 30, interval=0.2, message="the warm-up to settle")
    started = time.monotonic()
    _churn(url, CYCLES)
    churn_s = time.monotonic() - started

    def back() -> dict | None:
        state = settled()
        return state if state and state["fds"] == baseline["fds"] else None

    try:
        after = wait_until(back, 30, interval=0.2, message="the workers back to the baseline")
    finally:
        last = _state(instance)
    settle_s = time.monotonic() - started - churn_s
    figures(cycles=CYCLES, batch=BATCH, churn_seconds=round(churn_s, 1),
            settled_after_s=round(settle_s, 2),
            fds_before=sorted(baseline["fds"].values()), fds_after=sorted(last["fds"].values()),
            rss_mb_before=sorted(baseline["rss_mb"].values()),
            rss_mb_after=sorted(last["rss_mb"].values()),
            connections_after=last["connections"], registry_after=last["registry"],
            client_sockets_after=last["client_sockets"],
            redis_connections_before=baseline["redis_connections"],
            redis_connections_after=last["redis_connections"])
    print(f"\n{CYCLES} connect/close cycles in {churn_s:.1f} s: descriptors "
          f"{sorted(baseline['fds'].values())} -> {sorted(last['fds'].values())}, RSS "
          f"{sorted(baseline['rss_mb'].values())} -> {sorted(last['rss_mb'].values())} MB, "
          f"connections {last['connections']}, registry {last['registry']}")
    assert after is not None
