"""Redis killed with kill -9 (AOF, fsync on every write or every second) while publishers
keep publishing with their own ids, retrying until acknowledged, and clients keep resuming:
once Redis is back, every acknowledged message reaches every client exactly once; during
the outage every publish is answered 503 within REQUEST_TIMEOUT_SECONDS.

With ``everysec`` Redis normally hands each write to the operating system before it
replies, so a crash of the Redis process alone loses nothing acknowledged either; a crash
of the machine may lose about the last second."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Publisher, delivery, event_key, start_followers, stop_all
from tests.support.waiting import wait_until

CLIENTS = 20
TIMEOUT_S = 2.0
# What a loaded machine may add to the service's own bound.
MARGIN_S = 1.0
OUTAGE_S = 3.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("appendfsync", ["always", "everysec"])
def test_acknowledged_messages_survive_a_redis_crash_exactly_once(service, make_redis_server,
                                                                   appendfsync, figures):
    server = make_redis_server(appendonly=True, appendfsync=appendfsync)
    instance = service(redis_url=server.url(0), workers=2, SSE_RETRY_MS="300",
                       REQUEST_TIMEOUT_SECONDS=str(TIMEOUT_S))
    followers = start_followers(CLIENTS, instance.base_url, "/sse/stream/crash",
                                drop_every=(1.0, 3.0), retry_ms=300)
    publishers = [Publisher(instance.base_url, "crash", prefix=prefix, rate=15)
                  for prefix in ("a", "b")]
    try:
        wait_until(lambda: all(f.connects for f in followers), 30,
                   message="every client streaming")
        for publisher in publishers:
            publisher.start()
        wait_until(lambda: all(len(p.acknowledged) >= 30 for p in publishers), 30,
                   message="publishing")
        killed_at = time.monotonic()
        server.kill()
        time.sleep(OUTAGE_S)
        server.start()
        back_at = time.monotonic()
        firsts = wait_until(lambda: all(p.first_acknowledged_after(back_at)
                                        for p in publishers)
                            and [p.first_acknowledged_after(back_at) for p in publishers],
                            30, message="a publish acknowledged after Redis is back")
        first_id, first_acked = min(firsts, key=lambda found: found[1])
        wait_until(lambda: all(first_id in f.arrivals for f in followers), 30,
                   message="the first message after the restart to reach every client")
        delivered_s = max(f.arrivals[first_id] for f in followers) - back_at
        published_s = first_acked - back_at
        time.sleep(2)
        for publisher in publishers:
            publisher.stop()
        event_ids = {mid: eid for p in publishers for mid, eid in p.event_ids.items()}
        expected = sorted(event_ids, key=lambda mid: event_key(event_ids[mid]))
        wait_until(lambda: all(f.has(expected) for f in followers), 30,
                   message="every client to get every acknowledged message")
    finally:
        for publisher in publishers:
            publisher.halt.set()
        stop_all(followers)
    during = [(status, seconds) for p in publishers for status, seconds, _, started
              in p.answers if killed_at <= started < back_at]
    seen = delivery(followers, expected)
    refused = sum(len(f.refusals) for f in followers)
    longest = max(seconds for _, seconds in during)
    figures(appendfsync=appendfsync, clients=CLIENTS, streams_refused=refused,
            acknowledged=len(expected),
            publishes_during_outage=len(during),
            refused_during_outage=sum(status != 202 for status, _ in during),
            longest_answer_during_outage_s=round(longest, 2),
            first_publish_after_restart_s=round(published_s, 2),
            delivery_resumed_after_restart_s=round(delivered_s, 2),
            resumes=sum(f.connects - 1 for f in followers), **seen)
    print(f"\nRedis (appendfsync {appendfsync}) killed for {OUTAGE_S:g} s: "
          f"{len(expected)} acknowledged, lost "
          f"{seen['lost']}, duplicated {seen['duplicated']}; {len(during)} publishes during "
          f"the outage, longest answer {longest:.2f} s; publishing again "
          f"{published_s:.2f} s and delivering {delivered_s:.2f} s after Redis was back")
    assert seen == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert {status for status, _ in during} <= {202, 503}
    assert longest <= TIMEOUT_S + MARGIN_S
    assert all(not p.refused for p in publishers)
    assert all(not f.history_lost for f in followers)
