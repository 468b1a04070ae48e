"""A reconnect storm in which every client carries a Last-Event-ID, as after a deploy:
1,000 clients at once against one worker, their ids spread over the newest messages
(some older than what the worker keeps in memory, so those resumes read Redis), with more
published while they were away. None is refused; each gets exactly what it missed, then
live messages once."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

from tests.faults.conftest import event_key, message
from tests.support.sse_client import SSEClient
from tests.support.waiting import wait_until

CLIENTS = 1000
HISTORY = 400  # messages on the channel before the storm
SPREAD = 300  # the clients' ids are among the newest SPREAD of them
AWAY = 50  # published while they were away
RECENT = 200  # entries each worker keeps in memory


class Resumer(threading.Thread):
    def __init__(self, url: str, last_event_id: str, expected: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.last_event_id = last_event_id
        self.expected = expected
        self.ids: list[str] = []
        self.refused: str | None = None
        self.status = 0
        self.done_at: float | None = None
        self.error: str | None = None
        self.halt = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            with SSEClient(self.url, headers={"Last-Event-ID": self.last_event_id},
                           timeout=60) as client:
                self.status = client.status
                self.refused = client.headers.get("pushservice-refused")
                while not self.halt.is_set():
                    try:
                        frame = client.next_frame(0.5)
                    except TimeoutError:
                        continue
                    if frame.event == "closing":
                        self.refused = self.refused or frame.json()["reason"]
                        return
                    if frame.event == "info":
                        self.ids.append(frame.id)
                        if len(self.ids) == self.expected:
                            self.done_at = time.monotonic()
                            self.ready.set()
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()


def _publish(instance, count: int, start: int) -> list[str]:
    batch = [message(f"h-{n}", "crowd", n=n) for n in range(start, start + count)]
    response = instance.post("/api/v1/messages/batch", json={"messages": batch})
    assert response.status_code == 202, response.text
    return [result["event_id"] for result in response.json()["results"]]


@pytest.mark.timeout(150)
def test_a_crowd_resuming_at_once_is_admitted_whole_and_gets_what_it_missed(service, figures):
    instance = service(workers=1, RECENT_HISTORY_ENTRIES=str(RECENT),
                       PUBLISH_RATE_PER_SERVICE="0")
    history = []
    for start in range(0, HISTORY, 100):
        history += _publish(instance, 100, start)
    away = _publish(instance, AWAY, HISTORY)
    stream = history + away
    chooser = random.Random(7)
    positions = [chooser.randrange(HISTORY - SPREAD, HISTORY) for _ in range(CLIENTS)]
    url = instance.url("/sse/stream/crowd")
    crowd = [Resumer(url, stream[p], len(stream) - p - 1) for p in positions]
    started = time.monotonic()
    for client in crowd:
        client.start()
    try:
        wait_until(lambda: all(c.ready.is_set() or c.refused for c in crowd), 120,
                   message=lambda: f"every client to get what it missed; "
                   f"{sum(c.ready.is_set() for c in crowd)} of {CLIENTS} did")
        storm_s = max(c.done_at or 0 for c in crowd) - started
        live = _publish(instance, 3, HISTORY + AWAY)
        wait_until(lambda: all(len(c.ids) >= c.expected + 3 or c.refused or c.error
                               for c in crowd), 30, message="the live messages")
        time.sleep(0.3)
    finally:
        for client in crowd:
            client.halt.set()
        for client in crowd:
            client.join(10)
    refused = [c.refused for c in crowd if c.refused]
    errors = [c.error for c in crowd if c.error]
    wrong = [c for c in crowd
             if c.ids != stream[stream.index(c.last_event_id) + 1:] + live]
    from_redis = sum(p < HISTORY + AWAY - RECENT for p in positions)
    figures(clients=CLIENTS, workers=1, stream_messages=len(stream),
            ids_older_than_recent_history=from_redis,
            seconds_until_all_caught_up=round(storm_s, 2),
            streams_refused=len(refused), errors=len(errors), wrong=len(wrong),
            replayed_frames=sum(c.expected for c in crowd))
    print(f"\n{CLIENTS} clients resuming at once on one worker ({from_redis} from beyond "
          f"the recent history): all "
          f"had what they missed after {storm_s:.2f} s; refused {len(refused)}, wrong "
          f"{len(wrong)}")
    assert not errors, errors[:3]
    assert refused == []
    assert all(c.status == 200 for c in crowd)
    assert wrong == [], [(c.last_event_id, c.ids[:3], c.expected) for c in wrong[:3]]
    assert all(event_key(a) < event_key(b) for a, b in itertools.pairwise(stream))
