"""One connection's queue: offer() never blocks; a full queue closes the connection as a
slow consumer; close() is idempotent and wakes a waiting consumer."""

from __future__ import annotations

import gevent
import pytest
from gevent.hub import get_hub
from gevent.queue import Empty, Full

from pushservice.engine.subscription import (
    WAKE,
    WAKE_SLICE,
    CloseReason,
    Mailbox,
    Subscription,
    new_connection_id,
)


def test_offer_queues_items_in_order():
    subscription = Subscription(("user:u1",), queue_size=5)

    assert subscription.offer("a") is True
    assert subscription.offer("b") is True
    assert subscription.queue.take_all() == ["a", "b"]
    assert subscription.closing is None


def test_offer_never_blocks_and_a_full_queue_closes_as_slow_consumer_once():
    subscription = Subscription(("user:u1",), queue_size=2)

    with gevent.Timeout(1):  # a blocking put would hang here forever: nobody reads
        results = [subscription.offer(n) for n in range(5)]

    assert results == [True, True, False, True, True]
    assert subscription.closing == CloseReason.SLOW_CONSUMER
    assert subscription.close_detail == {"queue_size": 2}
    assert len(subscription.queue.queue) == 2


def test_offers_after_close_still_queue_while_there_is_room():
    subscription = Subscription(("user:u1",), queue_size=5)
    subscription.close(CloseReason.SHUTDOWN)

    assert subscription.offer("late") is True


def test_close_is_idempotent_and_keeps_the_first_reason():
    subscription = Subscription(("user:u1",), queue_size=5)

    subscription.close(CloseReason.KICKED, {"retry_ms": 100})
    subscription.close(CloseReason.SHUTDOWN, {"retry_ms": 999})

    assert subscription.closing == CloseReason.KICKED
    assert subscription.close_detail == {"retry_ms": 100}
    assert list(subscription.queue.queue) == [WAKE]


def test_close_wakes_a_waiting_consumer():
    subscription = Subscription(("user:u1",), queue_size=5)
    consumer = gevent.spawn(subscription.queue.take_all)
    gevent.idle()  # let the consumer block on its empty queue
    assert not consumer.ready()

    subscription.close(CloseReason.KICKED)

    assert consumer.get(timeout=1) == [WAKE]


def test_close_of_a_full_queue_does_not_block():
    subscription = Subscription(("user:u1",), queue_size=2)
    subscription.offer(1)
    subscription.offer(2)

    with gevent.Timeout(1):
        subscription.close(CloseReason.SHUTDOWN)

    assert subscription.closing == CloseReason.SHUTDOWN


def test_new_subscription_defaults():
    subscription = Subscription(("news", "user:u1"), queue_size=3)

    assert subscription.topics == ("news", "user:u1")
    assert subscription.named is True
    assert subscription.kind == "stream"
    assert subscription.closing is None
    assert subscription.position.key == (0, 0) and not subscription.position.known
    assert subscription.frames_sent == 0
    assert subscription.queue.maxsize == 3


def test_connection_ids_are_unique():
    ids = {new_connection_id() for _ in range(10_000)}
    ids |= {Subscription(("t",), 2).id for _ in range(100)}

    assert len(ids) == 10_100


@pytest.mark.parametrize("reason", [CloseReason.SHUTDOWN, CloseReason.SLOW_CONSUMER,
                                    CloseReason.REPLAY_LIMIT, CloseReason.KICKED,
                                    CloseReason.TOKEN_EXPIRED])
def test_close_reasons_are_plain_words(reason):
    assert reason.replace("_", "").isalpha()


def test_mailbox_hands_over_everything_waiting_at_once():
    mailbox = Mailbox(10)
    for item in ("a", "b", "c"):
        mailbox.put_nowait(item)
    assert mailbox.take_all() == ["a", "b", "c"]
    assert mailbox.queue == []


def test_mailbox_put_back_goes_before_newer_items():
    mailbox = Mailbox(10)
    mailbox.put_nowait("c")
    mailbox.put_back(["a", "b"])
    assert mailbox.take_all(timeout=0) == ["a", "b", "c"]


def test_mailbox_waits_for_the_first_item_and_times_out_empty():
    mailbox = Mailbox(10)
    with pytest.raises(Empty):
        mailbox.take_all(timeout=0.01)
    gevent.spawn_later(0.01, mailbox.put_nowait, "late")
    assert mailbox.take_all(timeout=2) == ["late"]


def test_mailbox_refuses_beyond_its_size_without_blocking():
    mailbox = Mailbox(2)
    mailbox.put_nowait(1)
    mailbox.put_nowait(2)
    with pytest.raises(Full):
        mailbox.put_nowait(3)


def test_many_items_are_queued_in_order_with_room_checked_once():
    mailbox = Mailbox(5)
    mailbox.put_many(["a", "b"])
    mailbox.put_many(["c"])

    with pytest.raises(Full):
        mailbox.put_many(["d", "e", "f"])  # one more than fits

    assert mailbox.take_all() == ["a", "b", "c", "d", "e"]


def test_offering_many_to_a_full_queue_closes_it_as_slow_once():
    subscription = Subscription(("news",), queue_size=3)

    assert subscription.offer_many(["a", "b"]) is True
    assert subscription.offer_many(["c", "d"]) is False
    assert subscription.offer_many(["e"]) is True  # already on its way out

    assert subscription.closing == CloseReason.SLOW_CONSUMER


def test_a_fan_out_wakes_consumers_a_slice_at_a_time_letting_others_run_between():
    # Many consumers waiting, and then one unrelated callback (as a publish's answer):
    # it must not wait for every consumer to have run.
    order: list[str] = []
    boxes = [Mailbox(10) for _ in range(WAKE_SLICE * 20)]

    def consume(index: int, box: Mailbox) -> None:
        box.take_all()
        order.append(f"consumer {index}")

    consumers = [gevent.spawn(consume, n, box) for n, box in enumerate(boxes)]
    gevent.sleep(0)  # all waiting
    for box in boxes:
        box.put_nowait("x")
    get_hub().loop.run_callback(lambda: order.append("other"))
    gevent.joinall(consumers, timeout=5)

    assert len(order) == len(boxes) + 1
    assert order.index("other") <= 2 * WAKE_SLICE


# -- a full mailbox lets low-priority messages go first ------------------------------------


def _entry(seq: int, priority: str = "normal"):
    from pushservice.store import Entry

    entry = Entry(1000, seq, "e", ("user:u1",), "info", b"{}", 0)
    entry.priority = priority
    return entry


def test_a_full_mailbox_sheds_low_priority_messages_before_cutting_the_client():
    from pushservice.engine.subscription import Shed

    subscription = Subscription(("user:u1",), queue_size=3)
    waiting = [_entry(1, "low"), _entry(2), _entry(3, "low")]
    for entry in waiting:
        assert subscription.offer(entry) is True

    urgent = _entry(4, "urgent")
    assert subscription.offer(urgent) is True
    assert subscription.closing is None
    shed, kept, new = subscription.queue.take_all()
    assert type(shed) is Shed and (shed.count, shed.first_id, shed.last_id) == (
        2, "e-1000-1", "e-1000-3")
    assert (kept, new) == (waiting[1], urgent)


def test_low_priority_messages_that_do_not_fit_are_counted_in_the_notice():
    from pushservice.engine.subscription import Shed

    subscription = Subscription(("user:u1",), queue_size=2)
    subscription.offer_many([_entry(1, "low"), _entry(2)])

    assert subscription.offer_many([_entry(3), _entry(4, "low"), _entry(5, "low")]) is True
    items = subscription.queue.take_all()
    assert [type(item).__name__ for item in items] == ["Shed", "Entry", "Entry", "Shed"]
    assert [item.count for item in items if type(item) is Shed] == [1, 2]


def test_without_low_priority_messages_to_let_go_the_slow_client_is_cut():
    subscription = Subscription(("user:u1",), queue_size=2)
    subscription.offer_many([_entry(1), _entry(2, "high")])

    assert subscription.offer(_entry(3, "low")) is True  # a low one that does not fit
    assert subscription.offer(_entry(4)) is False
    assert subscription.closing == CloseReason.SLOW_CONSUMER


def test_a_stream_of_its_own_user_is_that_users_for_acknowledgements():
    assert Subscription(("user:u1",), 5, user="u1").ack_user == "u1"
    assert Subscription(("user:u1", "news"), 5, user="u1").ack_user == "u1"
    assert Subscription(("user:u2",), 5, user="u1").ack_user is None  # a dashboard's view
    assert Subscription(("news",), 5).ack_user is None
