"""One client that stops reading among 100 that read, while 8 kB messages are published:
the stalled one is cut off (``closing: slow_consumer``, or its write times out) and may
resume; the others get everything, and their latency is recorded with and without it.

The kernel holds megabytes for a client that does not read (the server's send buffer grows
to tcp_wmem's maximum, 4 MB): at 8 kB and 20 messages a second that would take half a
minute to fill. So the stalled client also subscribes to a second channel, on which large
messages are published that only it receives; the 100 readers see only the 8 kB ones."""

from __future__ import annotations

import socket
import time

import pytest

from tests.faults.conftest import (
    Publisher,
    delivery,
    event_key,
    message,
    percentile,
    start_followers,
    stop_all,
)
from tests.support.sse_client import ChunkedDecoder, SSEClient, SSEParser
from tests.support.waiting import wait_until

READERS = 100
PAD = "x" * 8000
FILLER = "y" * 60_000
RATE = 20.0
BEFORE = 60  # messages before the stalled client arrives
WHILE = 160  # messages while it is there


def _stalled_client(port: int, path: str) -> socket.socket:
    """A client that sends its request and then never reads: a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    return sock


def _drain(sock: socket.socket, timeout: float) -> list:
    """Everything the server sent before it closed the connection, as SSE frames."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError("the server never closed the stalled connection")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0]
    return SSEParser().feed(ChunkedDecoder().feed(body).decode("utf-8", "replace"))


def _latencies(followers, messages: list[str], event_ids: dict[str, str]) -> list[float]:
    """Seconds from Redis taking each message in (its event id's time) to its arrival."""
    found = []
    for follower in followers:
        for message_id in messages:
            arrived = follower.arrived_wall.get(message_id)
            if arrived is not None:
                found.append(arrived - event_key(event_ids[message_id])[0] / 1000)
    return found


def _fill(instance, filled: list[str], event_ids: dict[str, str]) -> None:
    """Ten large messages for the stalled client's second channel."""
    base = len(filled)
    batch = [message(f"fill-{base + n}", "filler", pad=FILLER) for n in range(10)]
    response = instance.post("/api/v1/messages/batch", json={"messages": batch})
    assert response.status_code == 202, response.text
    for sent, result in zip(batch, response.json()["results"]):
        filled.append(sent["id"])
        event_ids[sent["id"]] = result["event_id"]


@pytest.mark.timeout(150)
def test_a_stalled_client_is_cut_off_and_the_others_keep_their_pace(service, figures):
    instance = service(workers=2, SSE_RETRY_MS="300", CONNECTION_QUEUE_SIZE="20",
                       WRITE_TIMEOUT_SECONDS="2")
    followers = start_followers(READERS, instance.base_url, "/sse/stream/big", retry_ms=300)
    publisher = Publisher(instance.base_url, "big", rate=RATE, pad=PAD)
    filled: list[str] = []
    filler_ids: dict[str, str] = {}
    stalled = None
    try:
        wait_until(lambda: all(f.connects for f in followers), 30,
                   message="every reader streaming")
        publisher.start()
        wait_until(lambda: len(publisher.acknowledged) >= BEFORE, 30, message="publishing")
        before = list(publisher.acknowledged)
        stalled = _stalled_client(instance.port, "/sse/stream/big,filler")
        wait_until(lambda: instance.open_connections() == READERS + 1, 10,
                   message="the stalled client admitted")
        stalled_at = time.monotonic()
        while instance.open_connections() > READERS:
            assert len(filled) < 400, "the stalled client was never cut off"
            _fill(instance, filled, filler_ids)
            time.sleep(0.1)
        cut_s = time.monotonic() - stalled_at
        published_until_cut = len(publisher.acknowledged) - len(before)
        wait_until(lambda: len(publisher.acknowledged) >= len(before) + WHILE, 60,
                   message="publishing on")
        publisher.stop()
        expected = publisher.acknowledged
        wait_until(lambda: all(f.has(expected) for f in followers), 30,
                   message="every reader to get every message")
        frames = _drain(stalled, 30)
        got = [frame.json()["id"] for frame in frames if frame.event == "info"]
        closing = [frame.json() for frame in frames if frame.event == "closing"]
        # It resumes from the last frame it read whole, and gets exactly the rest.
        event_ids = {**publisher.event_ids, **filler_ids}
        both = sorted(event_ids, key=lambda mid: event_key(event_ids[mid]))
        last = frames[-1].last_event_id
        missed = [mid for mid in both if event_key(event_ids[mid]) > event_key(last)]
        with SSEClient(instance.url("/sse/stream/big,filler"),
                       headers={"Last-Event-ID": last}) as again:
            rest = [frame.json()["id"] for frame in again.collect(
                len(missed), timeout=30, predicate=lambda f: f.event == "info")]
            again.assert_silent(0.5, lambda f: f.event == "info")
    finally:
        publisher.halt.set()
        stop_all(followers)
        if stalled is not None:
            stalled.close()
    seen = delivery(followers, expected)
    during = expected[len(before):]
    p99_before = percentile(_latencies(followers, before[10:], publisher.event_ids), 0.99)
    p99_during = percentile(_latencies(followers, during, publisher.event_ids), 0.99)
    cut_by = closing[0]["reason"] if closing else "write_timeout"
    figures(readers=READERS, message_bytes=len(PAD) + 100, messages=len(expected),
            stalled_cut_after_s=round(cut_s, 2), stalled_cut_by=cut_by,
            stalled_received=len(got), filler_mb_for_it=round(len(filled) * 0.06, 1),
            published_until_cut=published_until_cut,
            p99_ms_without_stalled=round(p99_before * 1000, 1),
            p99_ms_with_stalled=round(p99_during * 1000, 1),
            readers_cut_off=sum(len(f.closings) for f in followers), **seen)
    print(f"\nstalled client cut off ({cut_by}) {cut_s:.2f} s after it stopped reading, "
          f"having received {len(got)} messages; {READERS} readers: lost {seen['lost']}, "
          f"duplicated {seen['duplicated']}, p99 {p99_before * 1000:.1f} ms without it, "
          f"{p99_during * 1000:.1f} ms with it")
    assert seen == {"lost": 0, "duplicated": 0, "out_of_order": 0}
    assert all(not f.closings for f in followers), "a reader was cut off"
    assert closing == [] or closing[0]["reason"] == "slow_consumer"
    assert len(got) < len(both)
    if got:  # what it got before the cut is a run of consecutive messages
        start = both.index(got[0])
        assert got == both[start:start + len(got)]
    assert rest == missed
