"""Redis restarted empty (it lost its data) while clients keep dropping and resuming: each
client is told ``history-lost`` (``stream_reset``) before anything of the new stream, and
then gets every new message exactly once. Never a silent gap."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Publisher, delivery, start_followers, stop_all
from tests.support.waiting import wait_until

CLIENTS = 20


@pytest.mark.timeout(120)
def test_clients_are_told_history_was_lost_then_get_every_new_message(
        service, make_redis_server, figures):
    server = make_redis_server()
    instance = service(redis_url=server.url(0), workers=2, SSE_RETRY_MS="300")
    followers = start_followers(CLIENTS, instance.base_url, "/sse/stream/reset",
                                drop_every=(0.5, 2.0), retry_ms=300)
    before = Publisher(instance.base_url, "reset", prefix="old", rate=25)
    after = Publisher(instance.base_url, "reset", prefix="new", rate=25)
    try:
        wait_until(lambda: all(f.connects for f in followers), 30,
                   message="every client streaming")
        before.start()
        wait_until(lambda: len(before.acknowledged) >= 50, 30, message="publishing")
        before.stop()
        old = before.acknowledged
        wait_until(lambda: all(f.has(old) for f in followers), 30,
                   message="every client to get the messages of the first stream")
        marks = {id(f): len(f.log) for f in followers}
        server.stop(save=False)
        server.wipe_data()
        time.sleep(1.0)
        server.start()
        after.start()
        wait_until(lambda: len(after.acknowledged) >= 75, 30, message="publishing again")
        after.stop()
        new = after.acknowledged
        wait_until(lambda: all(f.has(new) for f in followers), 30,
                   message=lambda: "every client to get every new message; missing "
                   f"{[len(f.missing(new)) for f in followers]}")
    finally:
        before.halt.set()
        after.halt.set()
        stop_all(followers)
    seen_old = delivery(followers, old)
    seen_new = delivery(followers, new)
    new_ids = set(new)
    silent_gaps = 0
    told = 0
    for follower in followers:
        tail = follower.log[marks[id(follower)]:]
        first_new = next(i for i, (kind, value) in enumerate(tail)
                         if kind == "message" and value in new_ids)
        resets = [i for i, (kind, value) in enumerate(tail)
                  if kind == "lost" and value == "stream_reset"]
        told += bool(resets)
        silent_gaps += not resets or resets[0] > first_new
    figures(clients=CLIENTS, messages_before=len(old), messages_after=len(new),
            told_history_lost=told, silent_gaps=silent_gaps,
            history_lost_events=sum(len(f.history_lost) for f in followers),
            streams_refused=sum(len(f.refusals) for f in followers),
            lost=seen_new["lost"], duplicated=seen_old["duplicated"] + seen_new["duplicated"],
            out_of_order=seen_old["out_of_order"] + seen_new["out_of_order"],
            resumes=sum(f.connects - 1 for f in followers))
    print(f"\nRedis restarted empty: {told} of {CLIENTS} clients told history-lost "
          f"(stream_reset), {silent_gaps} silent gaps; of {len(new)} new messages lost "
          f"{seen_new['lost']}, duplicated {seen_new['duplicated']}")
    assert told == CLIENTS and silent_gaps == 0
    assert seen_old == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert seen_new == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert {lost["reason"] for f in followers for lost in f.history_lost} == {"stream_reset"}
