"""MAX_CONNECTIONS per instance: every worker counts its streams in one shared table."""

from __future__ import annotations

import os

import pytest

from pushservice.ops.capacity import ConnectionBudget


def test_a_worker_is_refused_at_the_limit_and_admitted_after_a_release():
    budget = ConnectionBudget(2)

    assert budget.try_acquire() and budget.try_acquire()
    assert not budget.try_acquire()
    budget.release()
    assert budget.try_acquire()
    assert budget.total() == 2


def test_releasing_more_than_was_acquired_never_goes_below_zero():
    budget = ConnectionBudget(1)
    budget.release()
    assert budget.total() == 0
    assert budget.try_acquire()


def test_the_limit_holds_for_the_sum_of_all_workers():
    master = ConnectionBudget(3, slots=4)
    first, second = master.assign_slot(), master.assign_slot()
    assert first != second
    master.claim(first, 101)  # as worker 101 does after fork
    assert master.try_acquire() and master.try_acquire()
    master.claim(second, 102)  # worker 102, in its own process, sees the same table
    assert master.try_acquire()
    assert not master.try_acquire()
    assert master.total() == 3


def test_a_dead_workers_streams_stop_counting_when_its_slot_is_freed():
    master = ConnectionBudget(2, slots=2)
    slot = master.assign_slot()
    master.claim(slot, 101)
    master.try_acquire()
    master.try_acquire()

    master.release_slot(slot)  # the master saw worker 101 exit

    assert master.total() == 0
    assert master.assign_slot() == slot  # free for the next worker


def test_slots_run_out_with_a_clear_error():
    master = ConnectionBudget(1, slots=1)
    master.assign_slot()
    with pytest.raises(RuntimeError, match="slot"):
        master.assign_slot()


def test_forked_workers_share_the_count():
    master = ConnectionBudget(10, slots=2)
    slot = master.assign_slot()
    to_master, from_worker = os.pipe()
    to_worker, from_master = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            master.claim(slot, os.getpid())
            for _ in range(3):
                master.try_acquire()
            os.write(from_worker, b"x")
            os.read(to_worker, 1)  # hold on until the master has looked
        finally:
            os._exit(0)
    try:
        assert os.read(to_master, 1) == b"x"
        assert master.total() == 3
    finally:
        os.write(from_master, b"y")
        os.waitpid(pid, 0)
        for fd in (to_master, from_worker, to_worker, from_master):
            os.close(fd)
