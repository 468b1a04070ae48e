"""Positions and the event ids that carry them: ``<epoch>-<ms>-<seq>``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushservice.engine.position import Position, parse_event_id, parse_stream_id

U64 = 2**64 - 1


def test_event_id_is_epoch_ms_seq():
    position = Position("a1b2c3d4", 1753859400123, 7)

    assert position.event_id == "a1b2c3d4-1753859400123-7"
    assert position.stream_id == "1753859400123-7"
    assert position.key == (1753859400123, 7)


def test_parse_event_id():
    assert parse_event_id("a1b2c3d4-1753859400123-7") == Position("a1b2c3d4", 1753859400123, 7)


def test_parse_event_id_ignores_surrounding_whitespace():
    assert parse_event_id("  e1-5-0\t") == Position("e1", 5, 0)


@given(epoch=st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True),
       ms=st.integers(0, U64), seq=st.integers(0, U64))
def test_parse_and_format_round_trip(epoch, ms, seq):
    position = Position(epoch, ms, seq)

    assert parse_event_id(position.event_id) == position
    assert parse_stream_id(position.stream_id) == (ms, seq)


@pytest.mark.parametrize("text", [
    "",
    " ",
    "e1",
    "e1-5",
    "5-0",
    "e1-5-0-1",
    "-5-0",
    "e1--0",
    "e1-5-",
    "e1-x-0",
    "e1-5-0x1",
    "e_1-5-0",
    "e1-+5-0",
    "e1--5-0",
    "e1-5.0-0",
    "e" * 33 + "-5-0",
    "e1-" + "1" * 21 + "-0",
    f"e1-{U64 + 1}-0",
    f"e1-0-{U64 + 1}",
    "e1-5-0\ndata: x",
    "é1-5-0",
    "e1-5-0;",
    "null",
])
def test_malformed_event_ids_are_not_positions(text):
    assert parse_event_id(text) is None


@pytest.mark.parametrize("text", ["e1-５-0", "e1-5-٠", "e1-१२-0"])
def test_event_ids_with_non_ascii_digits_are_not_positions(text):
    assert parse_event_id(text) is None


def test_largest_ids_are_positions():
    assert parse_event_id(f"e1-{U64}-{U64}") == Position("e1", U64, U64)


def test_positions_of_one_epoch_order_by_key():
    earlier = Position("e1", 5, 9)
    later = Position("e1", 6, 0)

    assert earlier.key < later.key
    assert Position("e1", 10, 0).key > Position("e1", 9, 99).key


def test_parse_stream_id_accepts_bytes_and_text():
    assert parse_stream_id(b"1700000000000-3") == (1700000000000, 3)
    assert parse_stream_id("0-0") == (0, 0)


@pytest.mark.parametrize("text", ["", "5", "5-", "-1", "a-1", "1-2-3", b"1-x"])
def test_parse_stream_id_rejects_what_is_not_a_stream_id(text):
    with pytest.raises(ValueError):
        parse_stream_id(text)
