"""Batching by itself, against the in-process fake of the service: concurrent sends
coalesce, each caller gets its own outcome, a bad message fails only its own caller."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from pushservice_client import AsyncPushClient, BadRequestError, PushClient, UnavailableError
from pushservice_client.batching import Concurrency

from .conftest import error_response, message

BATCH = "/api/v1/messages/batch"
SEND = "/api/v1/messages/send"


def _send_together(client: PushClient, messages: list[dict]) -> list:
    """Call ``client.send`` for each message from its own thread, all released at once;
    returns each thread's result or exception."""
    outcomes: list = [None] * len(messages)
    barrier = threading.Barrier(len(messages))

    def one(index: int) -> None:
        barrier.wait(5)
        try:
            outcomes[index] = client.send(messages[index])
        except Exception as exc:  # noqa: BLE001 - the outcome is what we assert on
            outcomes[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(messages))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return outcomes


def test_concurrent_sends_within_the_linger_go_out_as_one_batch(fake):
    with PushClient("http://push", transport=fake.transport, linger=0.05) as client:
        outcomes = _send_together(client, [message(n) for n in range(20)])
    assert [r.url.path for r in fake.requests] == [BATCH]
    sent = fake.bodies(BATCH)[0]["messages"]
    assert sorted(m["data"]["n"] for m in sent) == list(range(20))
    # Each caller got the result of its own message.
    by_id = {m["id"]: m["data"]["n"] for m in sent}
    assert [by_id[result.id] for result in outcomes] == list(range(20))
    assert len({result.event_id for result in outcomes}) == 20


def test_a_lone_caller_waits_no_longer_than_the_linger(fake):
    with PushClient("http://push", transport=fake.transport, linger=0.02) as client:
        started = time.monotonic()
        client.send(message())
        first = time.monotonic() - started
        started = time.monotonic()
        for n in range(10):
            client.send(message(n))
        following = (time.monotonic() - started) / 10
    assert first < 0.02 + 0.2, f"first send took {first:.3f}s"
    # A caller alone in a loop is expected alone: it does not wait out the linger again.
    assert following < 0.015, f"each following send took {following:.4f}s"
    assert [r.url.path for r in fake.requests] == [SEND] * 11


def test_a_bad_message_fails_only_its_own_caller(fake):
    messages = [message(n) for n in range(10)]
    messages[3] = {**messages[3], "type": "nonsense"}
    messages[7] = {**messages[7], "type": "rubbish"}
    with PushClient("http://push", transport=fake.transport, linger=0.05) as client:
        outcomes = _send_together(client, messages)
    for index, outcome in enumerate(outcomes):
        if index in (3, 7):
            assert isinstance(outcome, BadRequestError), outcome
            assert outcome.code == "validation_failed"
            assert outcome.details == [{"field": "type", "error": "bad type"}]
        else:
            assert outcome.event_id, outcome
    # One refused batch, then the eight good messages again, all in one batch.
    sizes = [len(body["messages"]) for body in fake.bodies(BATCH)]
    assert sizes == [10, 8]


def test_a_refusal_that_names_no_message_is_resolved_one_by_one(fake):
    fake.answer_next(error_response(400, "validation_failed", {"field": "messages"}))
    with PushClient("http://push", transport=fake.transport, linger=0.05) as client:
        outcomes = _send_together(client, [message(n) for n in range(4)])
    assert all(outcome.event_id for outcome in outcomes)
    assert [r.url.path for r in fake.requests] == [BATCH, SEND, SEND, SEND, SEND]


def test_a_failure_of_the_whole_batch_reaches_every_caller(fake):
    fake.answer_next(*[error_response(503, "redis_unavailable",
                                      headers={"Retry-After": "0.05"})] * 100)
    with PushClient("http://push", transport=fake.transport, linger=0.05,
                    deadline=0.3) as client:
        outcomes = _send_together(client, [message(n) for n in range(5)])
    assert all(isinstance(outcome, UnavailableError) for outcome in outcomes)


def test_a_smaller_service_batch_limit_is_learnt(fake):
    fake.answer_next(error_response(413, "batch_too_large", {"count": 6, "limit": 4}))
    with PushClient("http://push", transport=fake.transport, linger=0.05) as client:
        outcomes = _send_together(client, [message(n) for n in range(6)])
        assert client._batcher.max_batch == 4
    assert all(outcome.event_id for outcome in outcomes)
    sizes = [len(body["messages"]) for body in fake.bodies(BATCH)]
    assert sizes == [6, 4, 2]


def test_batches_hold_at_most_max_batch_size_messages(fake):
    with PushClient("http://push", transport=fake.transport, linger=0.05,
                    max_batch_size=8) as client:
        outcomes = _send_together(client, [message(n) for n in range(20)])
    assert all(outcome.event_id for outcome in outcomes)
    sizes = [len(body["messages"]) if "messages" in body else 1 for body in fake.bodies()]
    assert sum(sizes) == 20 and max(sizes) <= 8


def test_close_sends_what_is_queued_then_refuses(fake):
    client = PushClient("http://push", transport=fake.transport, linger=10)
    result: list = []
    sender = threading.Thread(target=lambda: result.append(client.send(message())))
    sender.start()
    deadline = time.monotonic() + 5
    while not client._batcher._queue and time.monotonic() < deadline:
        time.sleep(0.005)
    client.close()  # does not wait out the 10 s linger
    sender.join(5)
    assert result and result[0].event_id
    with pytest.raises(Exception, match="closed"):
        client.send(message())


def test_concurrency_is_remembered_for_a_window_or_two():
    now = [0.0]
    concurrency = Concurrency(clock=lambda: now[0])
    assert concurrency.expected() == 0
    concurrency.observe(32)
    now[0] = 1.5
    assert concurrency.expected() == 32
    concurrency.observe(5)
    now[0] = 2.6
    assert concurrency.expected() == 5
    now[0] = 10
    assert concurrency.expected() == 0


def test_async_sends_coalesce_and_each_coroutine_gets_its_own_outcome(fake):
    messages = [message(n) for n in range(30)]
    messages[4] = {**messages[4], "type": "bad"}

    async def run():
        async with AsyncPushClient("http://push", transport=fake.transport,
                                   linger=0.05) as client:
            return await asyncio.gather(*[client.send(m) for m in messages],
                                        return_exceptions=True)

    outcomes = asyncio.run(run())
    assert isinstance(outcomes[4], BadRequestError)
    assert all(o.event_id for i, o in enumerate(outcomes) if i != 4)
    assert [len(body["messages"]) for body in fake.bodies(BATCH)] == [30, 29]


def test_async_retries_a_batch_with_the_same_ids(fake):
    fake.answer_next(httpx.ConnectError("refused"))

    async def run():
        async with AsyncPushClient("http://push", transport=fake.transport,
                                   linger=0.02) as client:
            return await asyncio.gather(*[client.send(message(n)) for n in range(5)])

    outcomes = asyncio.run(run())
    first, second = fake.bodies(BATCH)
    assert [m["id"] for m in first["messages"]] == [m["id"] for m in second["messages"]]
    assert [o.id for o in outcomes] == [m["id"] for m in first["messages"]]
