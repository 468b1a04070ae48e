"""Delivery records, inboxes and the confirmation schedules (store/acks.py), on fakeredis:
what publishing, acknowledging, writing, connecting and time do to them."""

from __future__ import annotations

import time

import pytest

from pushservice.errors import ConflictError
from pushservice.message import MessageFactory
from pushservice.store import AckEntry, Entry
from pushservice.store.acks import AckStore

FACTORY = MessageFactory(message_ttl=3600, max_message_bytes=65536)
FAR = 2**62  # a position after everything
NOW = time.time()
T = int(NOW * 1000)  # "now" of the scripts, in ms: messages live an hour after it


class Counters:
    inbox_overflow = 0


@pytest.fixture
def acks(store, settings) -> AckStore:
    store.counters = Counters()
    return AckStore(settings, store.connections, store.keys)


def confirmable(user: str = "u1", priority: str = "normal", **metadata) -> dict:
    return {"type": "info", "service": "svc", "target": {"user_id": user},
            "metadata": {"require_ack": True, "priority": priority, **metadata}}


def publish(store, *raws: dict, now: float | None = None):
    return store.publish([FACTORY.build(raw, now=now) for raw in raws])


def claim(acks, user: str, published, now_ms: int, sent=(), position=(FAR, 0)):
    (got,) = acks.claim_inbox([(user, published.epoch, position, sent, 100)], now_ms)
    return got


def test_a_confirmation_requiring_message_gets_a_record_and_a_place_in_its_inbox(store, acks):
    (published,) = publish(store, confirmable(priority="high", ack_timeout=7))
    (record,) = acks.records([published.message.id])

    assert record["service"] == "svc" and record["users"] == "u1"
    assert record["event_id"] == published.event_id
    assert record["priority"] == "high" and record["timeout"] == "7000"
    assert record["max"] == "10"  # high: twice ACK_MAX_REDELIVERIES
    assert record["written"] == "0" and record["redeliveries"] == "0"
    assert store.client.zrange(acks.keys.inbox("u1"), 0, -1) == [published.message.id.encode()]


def test_plain_messages_have_no_record_and_plain_entries(store, acks):
    plain, low = publish(store, {"type": "info", "service": "svc", "target": {"user_id": "u1"}},
                         {"type": "info", "service": "svc", "target": {"user_id": "u1"},
                          "metadata": {"priority": "low"}})

    assert acks.records([plain.message.id, low.message.id]) == [None, None]
    entries = store.read_range((0, 0), 10)
    assert [type(entry) for entry in entries] == [Entry, Entry]
    assert [entry.priority for entry in entries] == ["normal", "low"]


def test_entries_say_which_message_asks_for_acknowledgement(store, acks):
    (published,) = publish(store, confirmable(priority="urgent"))
    (entry,) = store.read_range((0, 0), 10)

    assert type(entry) is AckEntry
    assert entry.ack_id == published.message.id and entry.priority == "urgent"


def test_a_full_inbox_gives_up_the_oldest_of_the_lowest_priority(store, acks, settings):
    store.settings = settings.replace(ack_inbox_max_messages=2)
    low, urgent = publish(store, confirmable(priority="low"), confirmable(priority="urgent"))
    (normal,) = publish(store, confirmable(priority="normal"))

    inbox = [member.decode() for member in store.client.zrange(acks.keys.inbox("u1"), 0, -1)]
    assert inbox == [normal.message.id, urgent.message.id]
    assert "dropped:u1" in acks.records([low.message.id])[0]
    assert store.counters.inbox_overflow == 1


def test_another_services_message_id_is_refused_with_nothing_written(store, acks):
    publish(store, {**confirmable(), "id": "order-1"})
    length = store.length()

    with pytest.raises(ConflictError) as caught:
        publish(store, {**confirmable(), "id": "order-1", "service": "other"})
    assert caught.value.code == "message_id_taken"
    assert store.length() == length
    assert acks.owners(["order-1", "nothing"]) == ["svc", None]


def test_acknowledging_is_idempotent_and_empties_the_inbox(store, acks):
    (published,) = publish(store, confirmable())
    message_id = published.message.id

    assert acks.acknowledge([message_id], "u1", T)[0] == ("acknowledged", T)
    assert acks.acknowledge([message_id], "u1", T + 1000)[0] == ("already", T)
    assert store.client.zcard(acks.keys.inbox("u1")) == 0
    assert acks.acknowledged_by("u1", [message_id, "other"]) == {message_id}


def test_one_id_of_another_users_message_refuses_the_whole_request(store, acks):
    mine, theirs = publish(store, confirmable("u1"), confirmable("u2"))

    assert acks.acknowledge([mine.message.id, theirs.message.id], "u1", T) == [1]
    assert acks.acknowledged_by("u1", [mine.message.id]) == set()


def test_unknown_and_expired_ids_are_told_apart(store, acks):
    (published,) = publish(store, confirmable(ttl=5), now=NOW)

    answers = acks.acknowledge([published.message.id, "nothing"], "u1", T + 6000)
    assert answers == [("expired", None), ("unknown", None)]


def test_without_a_user_every_user_of_the_message_acknowledges(store, acks):
    (published,) = publish(store, confirmable("u1"))

    assert acks.acknowledge([published.message.id], None, T)[0][0] == "acknowledged"
    assert acks.acknowledged_by("u1", [published.message.id]) == {published.message.id}


def test_a_new_stream_gets_what_waits_highest_priority_first_each_a_redelivery(store, acks):
    low, urgent, normal = publish(store, confirmable(priority="low"),
                                  confirmable(priority="urgent"), confirmable())
    now = T

    got = claim(acks, "u1", low, now)
    assert [r.message_id for r in got] == [urgent.message.id, normal.message.id,
                                           low.message.id]
    assert all(r.retries == 1 for r in got)
    # Delivered just now: the next stream gets them only once their timeout ran out.
    assert claim(acks, "u1", low, now + 1000) == []
    again = claim(acks, "u1", low, now + 200_000)
    assert {r.message_id for r in again} == {low.message.id, urgent.message.id,
                                             normal.message.id}
    assert {r.retries for r in again} == {2}


def test_the_inbox_leaves_out_what_the_stream_gets_anyway(store, acks):
    first, _ = publish(store, confirmable(), confirmable())
    now = T

    # Newer than the client's position: it comes live. Replayed: sent already.
    got = claim(acks, "u1", first, now, sent=[first.message.id],
                position=first.position.key)
    assert got == []
    got = claim(acks, "u1", first, now, position=first.position.key)
    assert [r.message_id for r in got] == [first.message.id]


def test_acknowledged_messages_and_spent_redeliveries_leave_the_inbox(store, acks, settings):
    store.ack_policy.max_redeliveries_setting = 1
    kept, acknowledged = publish(store, confirmable(), confirmable())
    acks.acknowledge([acknowledged.message.id], "u1", T)

    assert [r.message_id for r in claim(acks, "u1", kept, T)] == [kept.message.id]
    assert claim(acks, "u1", kept, T + 10**6) == []  # its one redelivery is spent
    assert store.client.zcard(acks.keys.inbox("u1")) == 0


def test_writes_are_counted_and_arm_the_redelivery(store, acks):
    (published,) = publish(store, confirmable(ack_timeout=20))
    message_id = published.message.id

    acks.record_writes({(message_id, "u1"): 2, (message_id, ""): 1, ("gone", "u1"): 1}, T)
    (record,) = acks.records([message_id])
    assert record["written"] == "3"
    assert record["delivered:u1"] == str(T) and record["due:u1"] == str(T + 20_000)
    assert acks.records(["gone"]) == [None]  # no record is made up for a write


def test_due_redeliveries_go_to_users_with_a_stream_open(store, acks):
    online, offline = publish(store, confirmable("u1", ack_timeout=1),
                              confirmable("u2", ack_timeout=1))
    now = T
    acks.record_writes({(online.message.id, "u1"): 1, (offline.message.id, "u2"): 1}, now)
    store.client.zadd(store.keys.user("u1"), {"c1": now + 60_000})

    (due,) = acks.take_due(now + 1500, 10)
    assert (due.user, due.message_id, due.retries) == ("u1", online.message.id, 1)
    assert acks.take_due(now + 1600, 10) == []
    # u2 has no stream: its next one gets the message from the inbox.
    assert [r.message_id for r in claim(acks, "u2", offline, now + 1600)] == [
        offline.message.id]


def test_expiry_closes_the_record_and_queues_one_notice(store, acks):
    acked, unacked = publish(store, confirmable(ttl=5), confirmable(ttl=5), now=NOW)
    acks.acknowledge([acked.message.id], "u1", T)

    assert acks.expire(T + 10_000, 10, notify=True) == [unacked.message.id]
    assert acks.expire(T + 10_000, 10, notify=True) == []
    assert store.client.zcard(acks.keys.inbox("u1")) == 0
    (notice,) = acks.take_notices(T + 10_000, 10)
    assert notice["id"] == unacked.message.id and notice["webhook_attempts"] == "1"
    # Claimed while it is sent: no second sender takes it.
    assert acks.take_notices(T + 10_000, 10) == []
    acks.notice_done(unacked.message.id, "retry", T + 11_000, retry_at_ms=T + 12_000)
    (again,) = acks.take_notices(T + 12_000, 10)
    assert again["webhook_attempts"] == "2"
    acks.notice_done(unacked.message.id, "delivered", T + 13_000)
    assert acks.records([unacked.message.id])[0]["webhook"] == "delivered"
    assert acks.take_notices(T + 10**6, 10) == []
