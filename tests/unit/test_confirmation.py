"""What priority means for delivery confirmation, and the status a publisher sees of a
delivery record (pushservice/confirmation.py)."""

from __future__ import annotations

import pytest

from pushservice.confirmation import AckPolicy, delivery_status


@pytest.mark.parametrize("priority, timeout_ms, redeliveries", [
    ("urgent", 7_500, 10), ("high", 15_000, 10), ("normal", 30_000, 5), ("low", 60_000, 2),
])
def test_higher_priorities_are_delivered_again_sooner_and_more_often(priority, timeout_ms,
                                                                     redeliveries):
    policy = AckPolicy(timeout_seconds=30, max_redeliveries=5)

    assert policy.timeout_ms(priority) == timeout_ms
    assert policy.max_redeliveries(priority) == redeliveries


def test_a_messages_own_timeout_wins_and_none_is_ever_under_a_second():
    assert AckPolicy(30, 5).timeout_ms("urgent", own_seconds=90) == 90_000
    assert AckPolicy(2, 5).timeout_ms("urgent") == 1000


def test_no_redeliveries_means_none_at_any_priority_and_low_gets_at_least_one():
    assert {AckPolicy(30, 0).max_redeliveries(p) for p in ("low", "urgent")} == {0}
    assert AckPolicy(30, 1).max_redeliveries("low") == 1


RECORD = {"id": "m1", "service": "svc", "event_id": "e-1-0", "type": "info",
          "priority": "high", "users": "u1", "topics": "user:u1,service:svc",
          "created": "1000", "expires": "100000", "timeout": "15000", "max": "10",
          "written": "0", "redeliveries": "0"}


@pytest.mark.parametrize("changes, now_ms, state", [
    ({}, 2000, "pending"),
    ({"written": "2", "delivered:u1": "1500"}, 2000, "delivered"),
    ({"written": "2", "acked:u1": "1800"}, 2000, "acknowledged"),
    ({"written": "2", "acked:u1": "1800"}, 200_000, "acknowledged"),
    ({"written": "2"}, 200_000, "expired_unacknowledged"),
    ({"expired": "100001"}, 50_000, "expired_unacknowledged"),
])
def test_the_state_a_publisher_sees(changes, now_ms, state):
    assert delivery_status({**RECORD, **changes}, now_ms)["state"] == state


def test_the_status_says_who_got_it_when_and_what_comes_next():
    status = delivery_status({**RECORD, "written": "3", "redeliveries": "1",
                              "delivered:u1": "1500", "due:u1": "16500", "retries:u1": "1"},
                             2000)

    assert status["topics"] == ["user:u1", "service:svc"]
    assert (status["written"], status["redeliveries"], status["ack_timeout_seconds"]) == (
        3, 1, 15.0)
    (user,) = status["users"]
    assert user == {"user": "u1", "delivered_at": "1970-01-01T00:00:01.500Z",
                    "acknowledged_at": None, "redeliveries": 1,
                    "next_redelivery_at": "1970-01-01T00:00:16.500Z",
                    "dropped_from_inbox_at": None}
    assert status["created_at"] == "1970-01-01T00:00:01.000Z" and status["webhook"] is None
