"""Every Redis connection of the service killed (CLIENT KILL TYPE normal, then TYPE pubsub)
every half second for five seconds, while publishers publish with their own ids and retry
until acknowledged and clients stream and resume: no acknowledged message is lost, none
reaches a client twice."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Publisher, delivery, event_key, start_followers, stop_all
from tests.support.waiting import wait_until

CLIENTS = 20
STORM_S = 5.0
EVERY_S = 0.5


@pytest.mark.timeout(120)
def test_killing_every_redis_connection_loses_and_repeats_nothing(service, make_redis_server,
                                                                  figures):
    server = make_redis_server()
    instance = service(redis_url=server.url(0), workers=2, SSE_RETRY_MS="300",
                       HEALTH_PROBE_SECONDS="1")
    followers = start_followers(CLIENTS, instance.base_url, "/sse/stream/kill",
                                drop_every=(1.0, 3.0), retry_ms=300)
    publishers = [Publisher(instance.base_url, "kill", prefix=prefix, rate=20)
                  for prefix in ("a", "b")]
    killed = 0
    rounds = 0
    try:
        wait_until(lambda: all(f.connects for f in followers), 30,
                   message="every client streaming")
        for publisher in publishers:
            publisher.start()
        wait_until(lambda: all(len(p.acknowledged) >= 20 for p in publishers), 30,
                   message="publishing")
        with server.client(0) as admin:
            storm_ends = time.monotonic() + STORM_S
            while time.monotonic() < storm_ends:
                killed += admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
                killed += admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                rounds += 1
                time.sleep(EVERY_S)
        calm_at = time.monotonic()
        wait_until(lambda: all(p.first_acknowledged_after(calm_at) for p in publishers), 30,
                   message="publishing after the storm")
        time.sleep(1)
        for publisher in publishers:
            publisher.stop()
        event_ids = {mid: eid for p in publishers for mid, eid in p.event_ids.items()}
        expected = sorted(event_ids, key=lambda mid: event_key(event_ids[mid]))
        wait_until(lambda: all(f.has(expected) for f in followers), 30,
                   message="every client to get every acknowledged message")
        health = wait_until(lambda: instance.get("/health").status_code == 200, 15,
                            message="/health 200 after the storm")
    finally:
        for publisher in publishers:
            publisher.halt.set()
        stop_all(followers)
    seen = delivery(followers, expected)
    refused = sum(len(f.refusals) for f in followers)
    answers = [status for p in publishers for status, _, _, _ in p.answers]
    figures(clients=CLIENTS, streams_refused=refused, kill_rounds=rounds,
            connections_killed=killed, acknowledged=len(expected),
            publish_attempts_refused=sum(s != 202 for s in answers),
            repeats_answered_duplicate=sum(p.duplicates for p in publishers),
            resumes=sum(f.connects - 1 for f in followers), **seen)
    print(f"\nCLIENT KILL every {EVERY_S:g} s for {STORM_S:g} s: {killed} Redis connections "
          f"killed; {len(expected)} acknowledged, lost {seen['lost']}, duplicated "
          f"{seen['duplicated']}; {sum(s != 202 for s in answers)} publish attempts refused")
    assert health
    assert killed >= rounds  # the storm reached the service's connections
    assert seen == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert all(not p.refused for p in publishers)
    assert all(not f.history_lost for f in followers)
