"""Background loops: retried with full-jitter backoff, never dead but when stopped."""

from __future__ import annotations

import gevent
import gevent.socket
import pytest

from pushservice.background import RETRY_CAP_SECONDS, forever, retry_backoff, spawn_forever
from pushservice.errors import StoreUnavailableError
from tests.support.waiting import wait_until


def test_backoff_is_full_jitter_up_to_its_cap():
    backoff = retry_backoff(base=0.1, cap=1.0)

    for failures in range(10):
        ceiling = min(1.0, 0.1 * 2**failures)
        delays = [backoff.compute(failures) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert min(delays) < ceiling / 2  # full jitter: not only the upper half


def test_the_default_policy_retries_redis_within_about_a_second():
    assert RETRY_CAP_SECONDS <= 1.0
    assert max(retry_backoff().compute(30) for _ in range(100)) <= 1.0


def test_a_failing_step_is_retried_and_cleaned_up_after(caplog):
    calls, cleanups = [], []

    def step():
        calls.append(1)
        if len(calls) <= 3:
            raise StoreUnavailableError("Redis is unavailable")
        if len(calls) == 4:
            raise ValueError("unexpected")
        return 10.0

    greenlet = spawn_forever(step, name="test loop", on_failure=cleanups.append,
                             backoff=retry_backoff(base=0.001, cap=0.01))
    try:
        wait_until(lambda: len(calls) >= 5, 5, message="five calls")
    finally:
        greenlet.kill()
    assert [type(e) for e in cleanups] == [StoreUnavailableError] * 3 + [ValueError]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # the first failure of a run; the rest at debug
    assert any(r.exc_info for r in caplog.records if r.levelname == "ERROR")


def test_the_pause_a_step_returns_is_kept():
    calls = []

    def step():
        calls.append(1)
        return 0.2

    greenlet = spawn_forever(step, name="paced")
    gevent.sleep(0.1)
    greenlet.kill()
    assert len(calls) == 1


def test_stopping_a_loop_ends_it():
    greenlet = spawn_forever(lambda: 0.01, name="stoppable")
    greenlet.kill(block=True, timeout=2)
    assert greenlet.dead


def test_a_broken_cleanup_does_not_stop_the_loop():
    calls = []

    def step():
        calls.append(1)
        raise StoreUnavailableError("down")

    def cleanup(error):
        raise RuntimeError("cleanup failed")

    greenlet = gevent.spawn(forever, step, name="x", on_failure=cleanup,
                            backoff=retry_backoff(base=0.001, cap=0.001))
    wait_until(lambda: len(calls) >= 3, 5, message="retries")
    greenlet.kill()
    assert not greenlet.exception


@pytest.mark.parametrize("failures", [0, 1, 5])
def test_backoff_never_exceeds_the_cap(failures):
    assert retry_backoff(base=0.5, cap=0.2).compute(failures) <= 0.2


def test_a_step_that_never_blocks_lets_io_and_woken_greenlets_run_between_its_calls():
    # A reader whose Redis replies are already waiting never blocks: between its reads
    # the streams it woke must still write, and requests that arrived be read.
    steps = 0
    reader_end, writer_end = gevent.socket.socketpair()
    seen: list[tuple[str, int]] = []

    def step():
        nonlocal steps
        steps += 1
        return 60.0 if steps >= 1000 else None  # then rest, so that a failure cannot hang

    def woken():
        while True:
            gevent.sleep(0)
            seen.append(("woken", steps))

    def io():
        while True:
            gevent.socket.wait_read(reader_end.fileno())
            reader_end.recv(1)
            seen.append(("io", steps))

    loop = spawn_forever(step, name="busy loop")
    others = [gevent.spawn(woken), gevent.spawn(io)]
    try:
        writer_end.sendall(b"x")
        wait_until(lambda: steps >= 100, 5, message="100 steps")
        writer_end.sendall(b"y")
        wait_until(lambda: sum(kind == "io" for kind, _ in seen) == 2, 5, message="I/O")
    finally:
        gevent.killall([loop, *others])
        reader_end.close()
        writer_end.close()
    assert {kind for kind, _ in seen} == {"woken", "io"}
    # Interleaved: others ran between steps, not only once the loop rested.
    assert len({count for kind, count in seen if kind == "woken"}) > 10
    assert min(count for kind, count in seen if kind == "io") < 1000
