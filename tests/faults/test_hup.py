"""A reload (SIGHUP to the gunicorn master: new workers, the old ones stopped gracefully)
with 200 open streams: every stream is told ``closing: shutdown``, its client reconnects to
a new worker and resumes with nothing lost and nothing twice."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.conftest import Publisher, delivery, start_followers, stop_all
from tests.support.waiting import wait_until

CLIENTS = 200


@pytest.mark.timeout(150)
def test_a_reload_closes_every_stream_with_shutdown_and_each_resumes(service, figures):
    instance = service(workers=2, SSE_RETRY_MS="500")
    followers = start_followers(CLIENTS, instance.base_url, "/sse/stream/hup", retry_ms=500)
    publisher = Publisher(instance.base_url, "hup", rate=20)
    try:
        wait_until(lambda: all(f.connects for f in followers), 60,
                   message="every client streaming")
        old_workers = set(instance.worker_pids())
        publisher.start()
        wait_until(lambda: len(publisher.acknowledged) >= 20, 30, message="publishing")
        assert instance.master_pid is not None
        hup_at = time.monotonic()
        os.kill(instance.master_pid, signal.SIGHUP)
        wait_until(lambda: all(f.streaming_since(hup_at) and f.worker not in old_workers
                               for f in followers), 60,
                   message=lambda: "every client streaming on a new worker; "
                   f"{sum(not f.streaming_since(hup_at) for f in followers)} not yet")
        back_s = time.monotonic() - hup_at
        wait_until(lambda: not old_workers & set(instance.worker_pids()), 30,
                   message="the old workers to exit")
        wait_until(lambda: len(publisher.acknowledged) >= 100, 30, message="publishing on")
        publisher.stop()
        expected = publisher.acknowledged
        wait_until(lambda: all(f.has(expected) for f in followers), 30,
                   message="every client to get every acknowledged message")
    finally:
        publisher.halt.set()
        stop_all(followers)
    seen = delivery(followers, expected)
    refused = sum(len(f.refusals) for f in followers)
    told = sum(any(c["reason"] == "shutdown" for c in f.closings) for f in followers)
    retries = sorted(c["retry_ms"] for f in followers for c in f.closings
                     if c["reason"] == "shutdown")
    figures(clients=CLIENTS, streams_refused=refused, messages=len(expected), told_shutdown=told,
            streaming_again_seconds=round(back_s, 2),
            shutdown_retry_ms_min=retries[0], shutdown_retry_ms_max=retries[-1],
            reconnects=sum(f.connects - 1 for f in followers), **seen)
    print(f"\nSIGHUP with {CLIENTS} streams: {told} told closing: shutdown (retry "
          f"{retries[0]}-{retries[-1]} ms), all streaming on new workers after "
          f"{back_s:.2f} s; {len(expected)} messages, lost {seen['lost']}, duplicated "
          f"{seen['duplicated']}")
    assert told == CLIENTS
    assert not publisher.refused
    assert refused == 0, [f.refusals for f in followers if f.refusals][:3]
    assert seen == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert all(not f.history_lost for f in followers)
