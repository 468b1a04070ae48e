"""Two instances on one Redis, one of them killed (kill -9, master and workers, as when a
machine dies): its clients, which know both addresses, move to the other one and resume
there; publishers move too. No acknowledged message is lost or delivered twice."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Publisher, delivery, start_followers, stop_all
from tests.support.waiting import wait_until

CLIENTS = 40


@pytest.mark.timeout(120)
def test_a_killed_instances_clients_resume_on_the_other(service, figures):
    alpha = service(workers=2, SSE_RETRY_MS="300", INSTANCE_NAME="alpha")
    beta = service(redis_url=alpha.redis_url, workers=2, SSE_RETRY_MS="300",
                   INSTANCE_NAME="beta")
    urls = [alpha.base_url, beta.base_url]
    followers = start_followers(CLIENTS, urls, "/sse/stream/failover", switch=True,
                                retry_ms=300)
    publisher = Publisher(urls, "failover", rate=25)
    try:
        wait_until(lambda: all(f.connects for f in followers), 30,
                   message="every client streaming")
        publisher.start()
        wait_until(lambda: len(publisher.acknowledged) >= 50, 30, message="publishing")
        on_alpha = [f for f in followers if f.instance_url == alpha.base_url]
        killed_at = time.monotonic()
        alpha.kill()
        wait_until(lambda: all(f.streaming_since(killed_at) for f in on_alpha), 30,
                   message="alpha's clients streaming on beta")
        back_s = time.monotonic() - killed_at
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
    figures(clients=CLIENTS, streams_refused=refused, on_killed_instance=len(on_alpha),
            messages=len(expected), streaming_again_seconds=round(back_s, 2), **seen)
    print(f"\ninstance killed with {len(on_alpha)} of {CLIENTS} clients: all streaming on "
          f"the other after {back_s:.2f} s; {len(expected)} messages, lost {seen['lost']}, "
          f"duplicated {seen['duplicated']}")
    assert on_alpha and all(f.instance_url == beta.base_url for f in followers)
    assert not publisher.refused
    assert refused == 0, [f.refusals for f in followers if f.refusals][:3]
    assert seen == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert all(not f.history_lost for f in followers)
