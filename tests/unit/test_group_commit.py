"""Group commit: concurrent calls share round trips, each caller gets its own answer, and
no caller waits past its deadline."""

from __future__ import annotations

import time

import gevent
import pytest

from pushservice.errors import StoreUnavailableError
from pushservice.group_commit import PROBE_EVERY, CallTimedOutError, GroupCommit


class FakeWrite:
    """Stands in for MessageStore.publish: records each call and its deadline, answers one
    result per item."""

    def __init__(self, delay: float = 0.0, fail_on: set[int] | None = None) -> None:
        self.calls: list[list] = []
        self.deadlines: list[float | None] = []
        self.delay = delay
        self.fail_on = fail_on or set()

    def __call__(self, messages, deadline=None):
        self.calls.append(list(messages))
        self.deadlines.append(deadline)
        if self.delay:
            gevent.sleep(self.delay)
        if len(self.calls) in self.fail_on:
            raise StoreUnavailableError("Redis is unavailable")
        return [f"stored:{message}" for message in messages]


def test_a_lone_publish_is_written_at_once():
    write = FakeWrite()
    commit = GroupCommit(write)
    assert commit.submit(["a", "b"]) == ["stored:a", "stored:b"]
    assert commit.submit(["c"]) == ["stored:c"]
    assert write.calls == [["a", "b"], ["c"]]


def test_concurrent_publishes_share_writes_and_get_their_own_results():
    write = FakeWrite(delay=0.01)
    commit = GroupCommit(write)
    callers = [gevent.spawn(commit.submit, [f"m{n}a", f"m{n}b"]) for n in range(20)]
    gevent.joinall(callers, timeout=5, raise_error=True)
    for n, caller in enumerate(callers):
        assert caller.value == [f"stored:m{n}a", f"stored:m{n}b"]
    assert len(write.calls) < 20
    assert sorted(m for call in write.calls for m in call) == sorted(
        m for n in range(20) for m in (f"m{n}a", f"m{n}b"))


def test_calls_that_arrive_together_share_the_first_write():
    write = FakeWrite()
    commit = GroupCommit(write)
    callers = [gevent.spawn(commit.submit, [n]) for n in range(10)]
    gevent.joinall(callers, timeout=5, raise_error=True)
    assert write.calls == [list(range(10))]
    assert [caller.value for caller in callers] == [[f"stored:{n}"] for n in range(10)]


def test_a_call_writes_at_once_when_turns_gather_no_one_and_probes_now_and_then():
    write = FakeWrite()
    commit = GroupCommit(write)
    for n in range(20):  # lone calls: turning the loop for them gathers no one
        commit.submit([n])

    others_ran = []
    bystander = gevent.spawn(others_ran.append, "ran")
    commit.submit(["at once"])
    assert others_ran == []  # written without yielding to the loop
    calls = 1
    while not others_ran and calls < 2 * PROBE_EVERY:
        commit.submit([calls])
        calls += 1
    # About PROBE_EVERY lone calls after the last turn, one turns the loop again.
    assert PROBE_EVERY - 25 < calls <= PROBE_EVERY
    bystander.join()


def test_calls_crowding_in_again_are_gathered_again():
    write = FakeWrite()
    commit = GroupCommit(write)
    for n in range(20):
        commit.submit([n])
    write.calls.clear()
    bursts = 0
    # Bursts of 10 concurrent callers: a probe among them finds the others.
    while write.calls[-3:] != [list(range(10))] * 3 and bursts < 3 * PROBE_EVERY // 10:
        gevent.joinall([gevent.spawn(commit.submit, [n]) for n in range(10)], timeout=5,
                       raise_error=True)
        bursts += 1
    assert write.calls[-3:] == [list(range(10))] * 3


def test_a_group_is_never_larger_than_the_limit():
    write = FakeWrite(delay=0.01)
    commit = GroupCommit(write, max_items=5)
    callers = [gevent.spawn(commit.submit, [n, n]) for n in range(10)]
    gevent.joinall(callers, timeout=5, raise_error=True)
    assert max(len(call) for call in write.calls) <= 5


def test_a_failed_write_fails_exactly_the_callers_it_carried():
    write = FakeWrite(delay=0.01, fail_on={2})
    commit = GroupCommit(write, max_items=4)
    callers = [gevent.spawn(commit.submit, [n]) for n in range(6)]
    gevent.joinall(callers, timeout=5)
    failed = {n for n, caller in enumerate(callers) if caller.exception is not None}
    carried = {message for message in write.calls[1]}
    assert failed == carried
    assert all(isinstance(callers[n].exception, StoreUnavailableError) for n in failed)
    assert commit.submit(["after"]) == ["stored:after"]


def test_a_killed_caller_does_not_strand_the_others():
    write = FakeWrite(delay=0.05)
    commit = GroupCommit(write)
    first = gevent.spawn(commit.submit, ["first"])
    gevent.sleep(0.01)  # first is writing
    others = [gevent.spawn(commit.submit, [n]) for n in range(3)]
    gevent.sleep(0)
    first.kill()
    gevent.joinall(others, timeout=5)
    assert [caller.value for caller in others] == [["stored:0"], ["stored:1"], ["stored:2"]]
    assert commit.submit(["later"]) == ["stored:later"]


@pytest.mark.parametrize("size", [1, 3])
def test_publishing_after_idle_periods_keeps_working(size):
    write = FakeWrite()
    commit = GroupCommit(write)
    for round_number in range(3):
        callers = [gevent.spawn(commit.submit, [round_number] * size) for _ in range(4)]
        gevent.joinall(callers, timeout=5, raise_error=True)
        gevent.sleep(0.01)
    assert sum(len(call) for call in write.calls) == 12 * size


def test_a_call_still_waiting_at_its_deadline_is_never_written():
    write = FakeWrite(delay=0.3)
    commit = GroupCommit(write)
    first = gevent.spawn(commit.submit, ["slow"])
    gevent.sleep(0.01)  # the first write is in flight

    with pytest.raises(CallTimedOutError) as caught:
        commit.submit(["late"], timeout=0.05)

    assert caught.value.queued is True
    first.join(timeout=2)
    gevent.sleep(0.05)
    assert write.calls == [["slow"]]  # "late" never reached Redis


def test_a_call_in_the_next_group_is_written_within_its_deadline():
    write = FakeWrite(delay=0.2)
    commit = GroupCommit(write)
    driver = gevent.spawn(commit.submit, ["first"])
    gevent.sleep(0.01)
    waiting = gevent.spawn(commit.submit, ["second"], timeout=2)

    gevent.joinall([driver, waiting], timeout=3)

    assert waiting.value == ["stored:second"]
    assert write.deadlines[1] is not None


def test_a_call_whose_write_is_in_flight_at_its_deadline_times_out():
    write = FakeWrite(delay=0.3)
    commit = GroupCommit(write)
    driver = gevent.spawn(commit.submit, ["first"])
    gevent.sleep(0.01)

    with pytest.raises(CallTimedOutError) as caught:
        commit.submit(["second"], timeout=0.45)  # its write starts at 0.3 s, ends at 0.6

    assert caught.value.queued is False
    driver.join(timeout=2)


def test_the_write_is_told_the_earliest_deadline_it_carries():
    write = FakeWrite(delay=0.05)
    commit = GroupCommit(write)
    blocker = gevent.spawn(commit.submit, ["x"])
    gevent.sleep(0.01)
    callers = [gevent.spawn(commit.submit, [n], timeout=t) for n, t in ((1, 5), (2, 2), (3, None))]
    gevent.joinall([blocker, *callers], timeout=5, raise_error=True)

    second = write.deadlines[1]
    assert second is not None and second < time.time() + 2.5
