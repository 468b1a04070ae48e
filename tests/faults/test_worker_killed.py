"""A worker killed with kill -9 while it holds streams: its clients' connections break,
they reconnect (the other worker takes them, gunicorn starts a new one) and resume with
Last-Event-ID, missing nothing and getting nothing twice."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from tests.faults.conftest import Publisher, delivery, start_followers, stop_all
from tests.support.waiting import wait_until

CLIENTS = 40


@pytest.mark.timeout(120)
def test_a_killed_workers_clients_resume_elsewhere_without_loss(service, figures):
    instance = service(workers=2, SSE_RETRY_MS="300")
    followers = start_followers(CLIENTS, instance.base_url, "/sse/stream/killed",
                                retry_ms=300)
    publisher = Publisher(instance.base_url, "killed", rate=25)
    try:
        wait_until(lambda: all(f.connects for f in followers), 30,
                   message="every client streaming")
        publisher.start()
        wait_until(lambda: len(publisher.acknowledged) >= 50, 30, message="publishing")
        by_worker = Counter(f.worker for f in followers)
        victim = by_worker.most_common(1)[0][0]
        on_victim = [f for f in followers if f.worker == victim]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: all(f.streaming_since(killed_at) for f in on_victim), 30,
                   message="the killed worker's clients streaming again")
        back_s = time.monotonic() - killed_at
        wait_until(lambda: len(instance.worker_pids()) == 2
                   and victim not in instance.worker_pids(), 30,
                   message="gunicorn to replace the worker")
        replaced_s = time.monotonic() - killed_at
        wait_until(lambda: len(publisher.acknowledged) >= 150, 30,
                   message="publishing after the kill")
        publisher.stop()
        expected = publisher.acknowledged
        wait_until(lambda: all(f.has(expected) for f in followers), 30,
                   message="every client to get every acknowledged message")
    finally:
        publisher.halt.set()
        stop_all(followers)
    seen = delivery(followers, expected)
    refused = sum(len(f.refusals) for f in followers)
    figures(clients=CLIENTS, streams_refused=refused, on_killed_worker=len(on_victim),
            messages=len(expected), streaming_again_seconds=round(back_s, 2),
            new_worker_forked_seconds=round(replaced_s, 2), **seen)
    print(f"\nworker {victim} killed with {len(on_victim)} of {CLIENTS} clients: all "
          f"streaming again after {back_s:.2f} s (a new worker forked after "
          f"{replaced_s:.1f} s); "
          f"{len(expected)} messages, lost {seen['lost']}, duplicated {seen['duplicated']}")
    assert not publisher.refused
    assert refused == 0, [f.refusals for f in followers if f.refusals][:3]
    assert seen == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert all(not f.history_lost for f in followers)
