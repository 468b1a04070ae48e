"""The replay/live seam under a storm: clients that keep hanging up and resuming with
Last-Event-ID while messages are published without pause. Every client must get every
message exactly once, in order, whatever moment its resume lands on."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Publisher, delivery, start_followers, stop_all
from tests.support.waiting import wait_until

CLIENTS = 60
RATE = 30.0  # messages a second
SECONDS = 12.0


@pytest.mark.timeout(120)
def test_clients_dropping_and_resuming_at_random_get_every_message_once(service, figures):
    instance = service(workers=2, SSE_RETRY_MS="200")
    followers = start_followers(CLIENTS, instance.base_url, "/sse/stream/seam",
                                drop_every=(0.5, 3.0), retry_ms=200)
    publisher = Publisher(instance.base_url, "seam", rate=RATE)
    try:
        wait_until(lambda: all(f.connects for f in followers), 30,
                   message="every client streaming")
        publisher.start()
        time.sleep(SECONDS)
        publisher.stop()
        expected = publisher.acknowledged
        wait_until(lambda: all(f.has(expected) for f in followers), 30,
                   message=lambda: f"every client to get all {len(expected)} messages; "
                   f"missing {[len(f.missing(expected)) for f in followers]}")
    finally:
        publisher.halt.set()
        stop_all(followers)
    seen = delivery(followers, expected)
    reconnects = sum(f.connects - 1 for f in followers)
    refused = sum(len(f.refusals) for f in followers)
    figures(clients=CLIENTS, messages=len(expected), reconnects=reconnects,
            streams_refused=refused, **seen)
    print(f"\nseam storm: {CLIENTS} clients, {len(expected)} messages, {reconnects} "
          f"resumes; lost {seen['lost']}, duplicated {seen['duplicated']}, "
          f"out of order {seen['out_of_order']}")
    assert not publisher.refused
    assert seen == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert reconnects >= CLIENTS * SECONDS / 3  # every client resumed several times
    assert all(not f.history_lost for f in followers), [f.history_lost for f in followers
                                                        if f.history_lost][:3]
