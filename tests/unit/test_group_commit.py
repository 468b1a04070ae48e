"""Group commit: concurrent publishes share round trips, each caller gets its own answer."""

from __future__ import annotations

import gevent
import pytest

from pushservice.engine.publishing import GroupCommit
from pushservice.errors import StoreUnavailableError


class FakeWrite:
    """Stands in for Store.publish: records each call, answers one result per message."""

    def __init__(self, delay: float = 0.0, fail_on: set[int] | None = None) -> None:
        self.calls: list[list] = []
        self.delay = delay
        self.fail_on = fail_on or set()

    def __call__(self, messages):
        self.calls.append(list(messages))
        if self.delay:
            gevent.sleep(self.delay)
        if len(self.calls) in self.fail_on:
            raise StoreUnavailableError("Redis is unavailable")
        return [f"stored:{message}" for message in messages]


def test_a_lone_publish_is_written_at_once():
    write = FakeWrite()
    commit = GroupCommit(write)
    assert commit.publish(["a", "b"]) == ["stored:a", "stored:b"]
    assert commit.publish(["c"]) == ["stored:c"]
    assert write.calls == [["a", "b"], ["c"]]


def test_concurrent_publishes_share_writes_and_get_their_own_results():
    write = FakeWrite(delay=0.01)
    commit = GroupCommit(write)
    callers = [gevent.spawn(commit.publish, [f"m{n}a", f"m{n}b"]) for n in range(20)]
    gevent.joinall(callers, timeout=5, raise_error=True)
    for n, caller in enumerate(callers):
        assert caller.value == [f"stored:m{n}a", f"stored:m{n}b"]
    assert len(write.calls) < 20
    assert sorted(m for call in write.calls for m in call) == sorted(
        m for n in range(20) for m in (f"m{n}a", f"m{n}b"))


def test_a_group_is_never_larger_than_the_limit():
    write = FakeWrite(delay=0.01)
    commit = GroupCommit(write, max_messages=5)
    callers = [gevent.spawn(commit.publish, [n, n]) for n in range(10)]
    gevent.joinall(callers, timeout=5, raise_error=True)
    assert max(len(call) for call in write.calls) <= 5


def test_a_failed_write_fails_exactly_the_callers_it_carried():
    write = FakeWrite(delay=0.01, fail_on={2})
    commit = GroupCommit(write)
    callers = [gevent.spawn(commit.publish, [n]) for n in range(6)]
    gevent.joinall(callers, timeout=5)
    failed = {n for n, caller in enumerate(callers) if caller.exception is not None}
    carried = {message for message in write.calls[1]}
    assert failed == carried
    assert all(isinstance(callers[n].exception, StoreUnavailableError) for n in failed)
    assert commit.publish(["after"]) == ["stored:after"]


def test_a_killed_caller_does_not_strand_the_others():
    write = FakeWrite(delay=0.05)
    commit = GroupCommit(write)
    first = gevent.spawn(commit.publish, ["first"])
    gevent.sleep(0.01)  # first is writing
    others = [gevent.spawn(commit.publish, [n]) for n in range(3)]
    gevent.sleep(0)
    first.kill()
    gevent.joinall(others, timeout=5)
    assert [caller.value for caller in others] == [["stored:0"], ["stored:1"], ["stored:2"]]
    assert commit.publish(["later"]) == ["stored:later"]


@pytest.mark.parametrize("size", [1, 3])
def test_publishing_after_idle_periods_keeps_working(size):
    write = FakeWrite()
    commit = GroupCommit(write)
    for round_number in range(3):
        callers = [gevent.spawn(commit.publish, [round_number] * size) for _ in range(4)]
        gevent.joinall(callers, timeout=5, raise_error=True)
        gevent.sleep(0.01)
    assert sum(len(call) for call in write.calls) == 12 * size
