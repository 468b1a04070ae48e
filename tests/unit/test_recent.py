"""The hub's recent history: contiguous, bounded in entries and bytes, forgotten when the
stream is recreated."""

from __future__ import annotations

from pushservice.engine.recent import RecentHistory
from pushservice.store import Entry

EP = "ep1"


def entry(n: int, epoch: str = EP, size: int = 10) -> Entry:
    return Entry(1000 + n, 0, epoch, ("news",), "info", b"x" * size, 0)


def started(max_entries: int = 100, max_bytes: int = 10_000) -> RecentHistory:
    recent = RecentHistory(max_entries, max_bytes)
    recent.restart(EP, (1000, 0))  # the reader starts after entry 0
    return recent


def test_it_covers_positions_from_its_floor_to_the_newest_entry():
    recent = started()
    recent.add([entry(n) for n in range(1, 6)])

    assert recent.covers(EP, (1000, 0)) and recent.covers(EP, (1003, 0))
    assert recent.covers(EP, (1005, 0))
    assert not recent.covers(EP, (999, 0))  # older than what it holds
    assert not recent.covers(EP, (1006, 0))  # newer than anything routed
    assert not recent.covers("other", (1003, 0))


def test_after_gives_exactly_what_follows_a_position():
    recent = started()
    recent.add([entry(n) for n in range(1, 6)])

    assert [e.ms for e in recent.after((1002, 0))] == [1003, 1004, 1005]
    assert [e.ms for e in recent.after((1000, 0))] == [1001, 1002, 1003, 1004, 1005]
    assert recent.after((1005, 0)) == []


def test_the_oldest_go_first_beyond_the_entry_bound():
    recent = started(max_entries=3)
    recent.add([entry(n) for n in range(1, 6)])

    assert len(recent) == 3
    assert recent.floor == (1002, 0)  # everything after 2 is kept
    assert recent.covers(EP, (1002, 0)) and not recent.covers(EP, (1001, 0))


def test_the_byte_bound_holds_too():
    recent = started(max_bytes=25)
    recent.add([entry(n, size=10) for n in range(1, 6)])

    assert recent.size_bytes <= 25 and len(recent) == 2
    assert recent.floor == (1003, 0)


def test_a_new_epoch_forgets_the_old_stream():
    recent = started()
    recent.add([entry(1), entry(2)])

    recent.add([entry(3, epoch="ep2")])

    assert not recent.covers(EP, (1001, 0))
    assert recent.covers("ep2", (0, 0))
    assert [e.ms for e in recent.after((0, 0))] == [1003]


def test_a_restart_forgets_everything():
    recent = started()
    recent.add([entry(1)])

    recent.restart(EP, (5000, 0))

    assert len(recent) == 0 and recent.size_bytes == 0
    assert recent.covers(EP, (5000, 0)) and not recent.covers(EP, (1001, 0))


def test_keeping_nothing_still_tracks_where_routing_stands():
    recent = RecentHistory(0, 0)
    recent.restart(EP, (1000, 0))
    recent.add([entry(1), entry(2)])

    assert len(recent) == 0
    assert recent.covers(EP, (1002, 0))  # nothing after it is missing: it is now
    assert not recent.covers(EP, (1001, 0))


def test_it_knows_whether_anything_after_a_position_is_for_some_topics():
    recent = started(max_entries=3)
    recent.add([Entry(1001, 0, EP, ("user:a",), "info", b"x", 0),
                Entry(1002, 0, EP, ("user:b", "service:s"), "info", b"x", 0),
                Entry(1003, 0, EP, ("user:c",), "info", b"x", 0)])

    assert recent.touched_after((1000, 0), frozenset({"user:a"}))
    assert not recent.touched_after((1001, 0), frozenset({"user:a"}))
    assert recent.touched_after((1001, 0), frozenset({"user:z", "service:s"}))
    assert not recent.touched_after((1003, 0), frozenset({"user:c"}))
    assert not recent.touched_after((1000, 0), frozenset({"user:z"}))
    assert recent.newest_entry.ms == 1003

    recent.add([Entry(1004, 0, EP, ("*",), "info", b"x", 0)])  # evicts user:a's entry
    assert recent.touched_after((1003, 0), frozenset({"user:z"}))  # a broadcast reaches all
    assert recent._newest_by_topic.keys() == {"user:b", "service:s", "user:c", "*"}


def test_what_it_knows_of_topics_is_bounded_by_what_it_keeps():
    recent = started(max_entries=10)
    recent.add([Entry(1000 + n, 0, EP, (f"user:{n}",), "info", b"x", 0)
                for n in range(1, 1001)])

    assert len(recent._newest_by_topic) == 10
    recent.restart(EP, (5000, 0))
    assert not recent._newest_by_topic
