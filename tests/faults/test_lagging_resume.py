"""A resume onto a lagging instance: two instances on one Redis, the second one's reader
kept behind (one entry per read, a burst of thousands of entries on another channel). A
client that got message X from the first instance resumes on the second with X while its
reader has not read up to X yet: it gets exactly what follows X (nothing of X or before it
again, its Last-Event-ID never moves back), then new messages once."""

from __future__ import annotations

import pytest
import requests

from tests.faults.conftest import event_key, message
from tests.support.sse_client import SSEClient
from tests.support.waiting import wait_until

ATTEMPTS = 4
BURST = 4000


def _publish(instance, messages: list[dict]) -> list[str]:
    response = instance.post("/api/v1/messages/batch", json={"messages": messages})
    assert response.status_code == 202, response.text
    return [result["event_id"] for result in response.json()["results"]]


def _reader_position(instance) -> tuple[int, int]:
    health = requests.get(instance.url("/health"), timeout=10).json()
    return event_key(health["checks"]["reader"]["position"])


@pytest.mark.timeout(150)
def test_a_resume_on_a_lagging_instance_never_repeats(service, figures):
    alpha = service(workers=1, PUBLISH_RATE_PER_SERVICE="0", INSTANCE_NAME="alpha")
    beta = service(redis_url=alpha.redis_url, workers=1, READER_BATCH_SIZE="1",
                   INSTANCE_NAME="beta")
    caught_behind = 0
    lags = []
    sequence = 0
    with SSEClient(alpha.url("/sse/stream/lag")) as watcher:
        watcher.wait_for(lambda frame: frame.event == "connected")
        for attempt in range(ATTEMPTS):
            sequence += 1
            earlier = _publish(alpha, [message(f"w-{attempt}-{n}", "lag") for n in range(3)])
            for start in range(0, BURST, 1000):
                _publish(alpha, [message(f"bulk-{attempt}-{n}", "bulk")
                                 for n in range(start, start + 1000)])
            (x_id,) = _publish(alpha, [message(f"x-{attempt}", "lag")])
            # The client got X from the instance that is up to date ...
            watcher.wait_for(lambda frame, x_id=x_id: frame.id == x_id, 30)
            # ... and resumes with it on the lagging one.
            with SSEClient(beta.url("/sse/stream/lag"),
                           headers={"Last-Event-ID": x_id}) as client:
                client.wait_for(lambda frame: frame.event == "connected", 30)
                behind = _reader_position(beta)
                if behind < event_key(x_id):
                    caught_behind += 1
                    lags.append(event_key(x_id)[0] - behind[0])
                (y_id,) = _publish(alpha, [message(f"y-{attempt}", "lag")])
                got = client.collect(1, 60, lambda frame: frame.event == "info")
                client.assert_silent(0.5, lambda frame: frame.event == "info")
                positions = [frame.last_event_id for frame in client.received
                             if frame.last_event_id]
            assert [frame.id for frame in got] == [y_id], (attempt, x_id, got)
            assert not set(earlier + [x_id]) & {frame.id for frame in client.received
                                                if frame.event == "info"}
            assert all(event_key(p) >= event_key(x_id) for p in positions), positions
            wait_until(lambda y_id=y_id: _reader_position(beta) >= event_key(y_id), 60,
                       message="the lagging instance to catch up")
    figures(attempts=ATTEMPTS, burst=BURST, caught_behind=caught_behind,
            lag_ms_when_resumed=lags)
    print(f"\nresume on a lagging instance: {caught_behind} of {ATTEMPTS} attempts caught it "
          f"behind X (by {lags} ms of stream time); never a repeat")
    assert caught_behind, "the second instance never lagged: the test proved nothing"
