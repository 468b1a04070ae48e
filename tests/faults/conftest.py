"""The fault suite: each test breaks something real (a worker, Redis, an instance, the
network to Redis) under load and records what users saw in ``figures``; the figures are
printed at the end of the run and written to var/fault-figures.json.

Shared here: ``Follower``, a client that follows a stream as a browser's EventSource does
(it resumes with Last-Event-ID after every end, waiting the ``retry:`` it was given), and
``Publisher``, a service that publishes messages with its own ids and retries each one
until it is acknowledged, as a careful publisher does.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests.support.sse_client import ProtocolError, SSEClient, SSETimeoutError, StreamClosedError

FIGURES_FILE = Path(__file__).resolve().parents[2] / "var" / "fault-figures.json"
_recorded: dict[str, dict] = {}

@pytest.fixture
def figures(request):
    """``figures(name=value, ...)`` records what this test measured."""
    def record(**values) -> None:
        _recorded.setdefault(request.node.nodeid.split("::", 1)[1], {}).update(values)

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not _recorded:
        return
    terminalreporter.section("fault suite figures")
    for test, values in _recorded.items():
        shown = ", ".join(f"{name}={value}" for name, value in values.items())
        terminalreporter.write_line(f"{test}: {shown}")
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    FIGURES_FILE.write_text(json.dumps(_recorded, indent=1, sort_keys=True) + "\n")


# -- clients -------------------------------------------------------------------------------


def event_key(event_id: str) -> tuple[int, int]:
    """The (ms, seq) of an event id ``<epoch>-<ms>-<seq>``."""
    _, ms, seq = event_id.rsplit("-", 2)
    return int(ms), int(seq)


class Follower(threading.Thread):
    """A client that follows ``path`` as a browser's EventSource does, through every drop.

    It connects to ``urls[0]``; after any end (the server closed the stream, a refusal, a
    failed connect) it waits the last ``retry:`` it was given and reconnects with the
    Last-Event-ID of the last frame it read completely. With ``switch`` it moves on to the
    next URL after a failed connect (a client that knows several instances). With
    ``drop_every=(low, high)`` it also hangs up by itself every ``low``-``high`` seconds
    (at random). ``last_event_id`` is where its first connect resumes from.

    What it saw: ``log`` (("message", id) and ("lost", reason) in the order they came),
    ``received`` (message ids), ``arrivals`` (message id -> when it came, first time, on
    the monotonic clock; ``arrived_wall`` on the wall clock),
    ``history_lost``, ``closings`` (every ``closing`` payload), ``refusals`` (their
    reasons), ``connects`` (``connected`` frames), ``connected_at`` and ``worker`` of the
    latest one, ``errors`` (connects that failed), ``drops`` (its own hang-ups).
    """

    def __init__(self, urls: str | Sequence[str], path: str, *, name: str = "",
                 drop_every: tuple[float, float] | None = None, switch: bool = False,
                 last_event_id: str = "", retry_ms: int = 3000, seed: int | None = None,
                 connect_timeout: float = 10.0) -> None:
        super().__init__(daemon=True, name=name or f"follower {path}")
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.path = path
        self.drop_every = drop_every
        self.switch = switch
        self.connect_timeout = connect_timeout
        self.random = random.Random(seed)
        self.halt = threading.Event()
        self.last_event_id = last_event_id
        self.retry_ms = retry_ms
        self.url_index = 0
        self.log: list[tuple[str, str]] = []
        self.received: list[str] = []
        self.arrivals: dict[str, float] = {}
        self.arrived_wall: dict[str, float] = {}
        self.event_ids: list[str] = []
        self.history_lost: list[dict[str, Any]] = []
        self.closings: list[dict[str, Any]] = []
        self.refusals: list[str] = []
        self.connects = 0
        self.connected_at: float | None = None
        self.worker: int | None = None
        self.instance_url: str | None = None
        self.streaming = False
        self.errors: list[str] = []
        self.drops = 0

    # -- what it saw ---------------------------------------------------------------------

    def missing(self, expected: Sequence[str]) -> list[str]:
        have = set(self.received)
        return [message_id for message_id in expected if message_id not in have]

    def duplicated(self) -> int:
        return len(self.received) - len(set(self.received))

    def in_order(self, expected: Sequence[str]) -> bool:
        """Whether the messages of ``expected`` it received came in that order."""
        wanted, have = set(expected), set(self.received)
        return ([m for m in dict.fromkeys(self.received) if m in wanted]
                == [m for m in expected if m in have])

    def has(self, expected: Sequence[str]) -> bool:
        return set(expected) <= set(self.received)

    def streaming_since(self, moment: float) -> bool:
        """Streaming on a connection whose ``connected`` came after ``moment``."""
        return self.streaming and self.connected_at is not None and self.connected_at > moment

    # -- the loop ------------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        self.halt.set()
        self.join(timeout)

    def run(self) -> None:
        while not self.halt.is_set():
            url = self.urls[self.url_index]
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
            try:
                with SSEClient(url + self.path, headers=headers,
                               timeout=self.connect_timeout) as client:
                    self.instance_url = url
                    if client.status != 200:
                        self.errors.append(f"status {client.status}")
                    else:
                        self._follow(client)
            except (OSError, ProtocolError, StreamClosedError, SSETimeoutError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if self.switch:
                    self.url_index = (self.url_index + 1) % len(self.urls)
            self.streaming = False
            self.halt.wait(self.retry_ms / 1000)

    def _follow(self, client: SSEClient) -> None:
        drop_at = (time.monotonic() + self.random.uniform(*self.drop_every)
                   if self.drop_every else None)
        while not self.halt.is_set():
            wait = 0.5
            if drop_at is not None:
                wait = min(wait, drop_at - time.monotonic())
                if wait <= 0:
                    self.drops += 1
                    return
            try:
                frame = client.next_frame(wait)
            except SSETimeoutError:
                continue
            except StreamClosedError:
                return
            self._take(frame)

    def _take(self, frame) -> None:
        now = time.monotonic()
        if frame.retry is not None:
            self.retry_ms = frame.retry
        if frame.data is not None:
            event = frame.event or "message"
            if event == "connected":
                greeting = orjson.loads(frame.data)
                self.connects += 1
                self.connected_at = now
                self.worker = greeting["worker"]
                self.streaming = True
            elif event == "history-lost":
                lost = orjson.loads(frame.data)
                self.history_lost.append(lost)
                self.log.append(("lost", lost["reason"]))
            elif event == "closing":
                closing = orjson.loads(frame.data)
                self.closings.append(closing)
                if closing.get("refused"):
                    self.refusals.append(closing["reason"])
                self.streaming = False
            elif event != "heartbeat":
                message_id = orjson.loads(frame.data)["id"]
                self.received.append(message_id)
                self.arrivals.setdefault(message_id, now)
                self.arrived_wall.setdefault(message_id, time.time())
                self.log.append(("message", message_id))
                if frame.id:
                    self.event_ids.append(frame.id)
        if frame.last_event_id:
            self.last_event_id = frame.last_event_id


def start_followers(count: int, urls: str | Sequence[str], path: str,
                    **options: Any) -> list[Follower]:
    followers = []
    for number in range(count):
        chosen = urls
        if not isinstance(urls, str) and options.get("switch"):
            # Clients that know every instance, spread over them.
            shift = number % len(urls)
            chosen = list(urls[shift:]) + list(urls[:shift])
        follower = Follower(chosen, path, name=f"follower {number}", seed=number, **options)
        follower.start()
        followers.append(follower)
    return followers


def stop_all(followers: Sequence[Follower]) -> None:
    for follower in followers:
        follower.halt.set()
    for follower in followers:
        follower.join(10)


def delivery(followers: Sequence[Follower], expected: Sequence[str]) -> dict[str, int]:
    """What the followers got of ``expected`` (message ids in stream order): messages
    lost, duplicated and out of order, summed over the followers."""
    return {
        "lost": sum(len(f.missing(expected)) for f in followers),
        "duplicated": sum(f.duplicated() for f in followers),
        "out_of_order": sum(not f.in_order(expected) for f in followers),
    }


# -- publishing ----------------------------------------------------------------------------


def message(message_id: str, channel: str, **data: Any) -> dict[str, Any]:
    """A message with its publisher's own id (so that a retry is harmless)."""
    return {"id": message_id, "type": "info", "service": "faults",
            "target": {"channel": channel}, "data": data}


class Publisher(threading.Thread):
    """A service publishing ``rate`` messages a second to ``channel``, each with its own
    id, each retried until acknowledged (moving to the next URL after a failure) before
    the next one goes out. ``retry`` False sends each message once, whatever the answer.

    ``acknowledged`` holds the ids answered 202, in order (the stream's order: one at a
    time); ``event_ids`` their event ids; ``refused`` the ids answered otherwise (without
    ``retry``, or not acknowledged within ``give_up`` seconds of retrying); ``answers``
    (status, seconds, id, started at) of every attempt.
    """

    def __init__(self, urls: str | Sequence[str], channel: str, *, prefix: str = "m",
                 rate: float = 25.0, retry: bool = True, timeout: float = 30.0,
                 pad: str = "", give_up: float = 60.0) -> None:
        super().__init__(daemon=True, name=f"publisher {prefix}")
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.channel = channel
        self.prefix = prefix
        self.rate = rate
        self.retry = retry
        self.timeout = timeout
        self.pad = pad
        self.give_up = give_up
        self.halt = threading.Event()
        self.url_index = 0
        self.acknowledged: list[str] = []
        self.event_ids: dict[str, str] = {}
        self.duplicates = 0
        self.refused: list[str] = []
        self.answers: list[tuple[int, float, str, float]] = []
        self.sequence = 0
        self._session = requests.Session()

    def stop(self, timeout: float = 40.0) -> None:
        self.halt.set()
        self.join(timeout)

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.halt.is_set():
            self.sequence += 1
            body = message(f"{self.prefix}-{self.sequence}", self.channel, n=self.sequence)
            if self.pad:
                body["data"]["pad"] = self.pad
            self.send(body)
            next_at = max(next_at + 1 / self.rate, time.monotonic() - 1)
            pause = next_at - time.monotonic()
            if pause > 0:
                self.halt.wait(pause)

    def send(self, body: dict[str, Any]) -> bool:
        """Publish ``body`` (retrying unless told not to); True once acknowledged."""
        first = time.monotonic()
        while True:
            started = time.monotonic()
            url = self.urls[self.url_index]
            try:
                response = self._session.post(url + "/api/v1/messages/send", json=body,
                                              timeout=self.timeout)
                status = response.status_code
            except requests.RequestException:
                status = 0
            self.answers.append((status, time.monotonic() - started, body["id"], started))
            if status == 202:
                answer = response.json()
                self.duplicates += bool(answer["duplicate"])
                self.event_ids[body["id"]] = answer["event_id"]
                self.acknowledged.append(body["id"])
                return True
            if status == 0 and len(self.urls) > 1:
                self.url_index = (self.url_index + 1) % len(self.urls)
                self._session.close()
                self._session = requests.Session()
            if not self.retry or time.monotonic() - first > self.give_up:
                self.refused.append(body["id"])
                return False
            time.sleep(0.05)

    def first_acknowledged_after(self, moment: float) -> tuple[str, float] | None:
        """The first message whose acknowledged attempt started after ``moment``."""
        for status, seconds, message_id, started in self.answers:
            if status == 202 and started > moment:
                return message_id, started + seconds
        return None


# -- processes -----------------------------------------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
