"""SSE frame encoding: whatever the text, a browser parses exactly the frame we meant.

The checks use the reference parser of tests/unit/conftest.py (the HTML standard's
algorithm): no value may add a field, end a frame early or dispatch an extra event.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushservice.engine.position import Position
from pushservice.engine.sse import (
    HEARTBEAT_COMMENT,
    FrameError,
    encode_frame,
    encode_json_frame,
    encode_message_frame,
    encode_position,
    encode_retry,
    message_frame,
)
from pushservice.errors import ValidationError
from pushservice.message import MESSAGE_TYPES, MessageFactory
from pushservice.store import Entry

BREAKERS = ("\r", "\n", "\x00")
# Any text, with line breaks of every kind and other troublemakers well represented.
any_text = st.lists(
    st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from(["\r", "\n", "\r\n", "\x00", ":", " ", "data:", "id:", "event:",
                       "retry:", "\ufeff", "\u2028", "\x85", "正"]),
    max_size=20,
).map("".join)
field_text = any_text.filter(lambda text: not any(c in text for c in BREAKERS))
text_with_breaker = st.tuples(any_text, st.sampled_from(BREAKERS), any_text).map("".join)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(any_text, children, max_size=4),
    max_leaves=10,
)


def normalised(text: str) -> str:
    """What a browser reads back from data: every line break becomes LF."""
    return re.sub(r"\r\n|\r|\n", "\n", text)


# -- the reference parser itself ---------------------------------------------------------


def test_reference_parser_follows_the_standard(sse):
    parsed = sse("\ufeffdata:a\r\ndata\rid: x\x00y\nevent:  e\nretry: 1x\n: c\n\n"
                 "id: 7\nretry: 50\n\n", last_event_id="start")

    assert [b.fields for b in parsed.blocks] == [
        [("data", "a"), ("data", ""), ("id", "x\x00y"), ("event", " e"), ("retry", "1x")],
        [("id", "7"), ("retry", "50")],
    ]
    assert parsed.blocks[0].comments == ["c"]
    # An id holding NUL is ignored; a block without data dispatches nothing.
    assert [(e.type, e.data, e.last_event_id) for e in parsed.events] == [(" e", "a\n", "start")]
    assert parsed.last_event_id == "7"
    assert parsed.retry == 50
    assert parsed.complete


def test_reference_parser_keeps_an_unfinished_block_pending(sse):
    parsed = sse("data: one\n\ndata: two\ndat")

    assert [e.data for e in parsed.events] == ["one"]
    assert not parsed.complete
    assert parsed.rest == "dat"
    assert parsed.unfinished.fields == [("data", "two")]


# -- examples ---------------------------------------------------------------------------


def test_frame_with_id_event_and_data(sse):
    frame = encode_frame('{"a": 1}', event="progress", event_id="e1-5-0")

    assert frame == b'id: e1-5-0\nevent: progress\ndata: {"a": 1}\n\n'
    (event,) = sse(frame).events
    assert (event.type, event.data, event.last_event_id) == ("progress", '{"a": 1}', "e1-5-0")


def test_multiline_data_becomes_several_data_lines(sse):
    frame = encode_frame("one\r\ntwo\rthree\nfour")

    assert frame == b"data: one\ndata: two\ndata: three\ndata: four\n\n"
    assert sse(frame).events[0].data == "one\ntwo\nthree\nfour"


def test_data_as_bytes_is_utf8(sse):
    frame = encode_frame("正在生成向量嵌入...".encode())

    assert sse(frame).events[0].data == "正在生成向量嵌入..."


def test_frame_can_carry_a_reconnect_delay(sse):
    frame = encode_frame("bye", event="closing", retry_ms=1500)

    parsed = sse(frame)
    assert parsed.retry == 1500
    assert [(e.type, e.data) for e in parsed.events] == [("closing", "bye")]


def test_frame_without_event_is_a_message_event(sse):
    (event,) = sse(encode_frame("x")).events

    assert event.type == "message"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "\n", "end\r\n"])
def test_id_and_event_with_line_breaks_or_nul_are_rejected(bad):
    with pytest.raises(FrameError):
        encode_frame("x", event_id=bad)
    with pytest.raises(FrameError):
        encode_frame("x", event=bad)


def test_frame_error_is_a_value_error():
    assert issubclass(FrameError, ValueError)


def test_json_frame_is_one_data_line(sse):
    frame = encode_json_frame({"text": "a\nb\r\nc", "zh": "向量"}, event="connected")

    assert frame.count(b"\ndata: ") == 1
    (event,) = sse(frame).events
    assert json.loads(event.data) == {"text": "a\nb\r\nc", "zh": "向量"}


def test_a_heartbeat_is_invisible_to_event_source(sse):
    parsed = sse(HEARTBEAT_COMMENT)

    assert parsed.events == [] and parsed.fields == []
    assert parsed.blocks[0].comments == ["heartbeat"]


def test_retry_frame(sse):
    parsed = sse(encode_retry(2500))

    assert encode_retry(2500) == b"retry: 2500\n\n"
    assert parsed.retry == 2500
    assert parsed.events == []


def test_position_moves_last_event_id_without_an_event(sse):
    parsed = sse(encode_position("e1-9-0"))

    assert parsed.events == []
    assert parsed.last_event_id == "e1-9-0"
    assert parsed.blocks[0].comments == ["heartbeat"]


def test_position_rejects_an_id_with_a_line_break():
    with pytest.raises(FrameError):
        encode_position("e1-9-0\ndata: x")


def test_position_comment_cannot_inject_a_field(sse):
    parsed = sse(encode_position("e1-9-0", comment="replay\ndata: injected"))

    assert parsed.events == []


def test_message_frame_named_and_plain(sse):
    body = b'{"id":"m1","message":"\xe5\x90\x91"}'

    named = encode_message_frame("e1-5-0", "progress", body)
    plain = encode_message_frame("e1-5-0", None, body)

    assert named == b"id: e1-5-0\nevent: progress\ndata: " + body + b"\n\n"
    assert plain == b"id: e1-5-0\ndata: " + body + b"\n\n"
    assert sse(named).events[0].type == "progress"
    assert sse(plain).events[0].type == "message"


# -- properties -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(data=any_text, event=st.none() | field_text, event_id=st.none() | field_text,
       retry_ms=st.none() | st.integers(0, 10**9))
def test_frame_is_exactly_one_event_whatever_the_text(sse, data, event, event_id, retry_ms):
    parsed = sse(encode_frame(data, event=event, event_id=event_id, retry_ms=retry_ms))

    assert parsed.complete
    (block,) = parsed.blocks
    expected = []
    if retry_ms is not None:
        expected.append(("retry", str(retry_ms)))
        assert parsed.retry == retry_ms
    if event_id is not None:
        expected.append(("id", event_id))
    if event is not None:
        expected.append(("event", event))
    expected += [("data", line) for line in normalised(data).split("\n")]
    assert block.fields == expected
    assert block.comments == []
    assert parsed.events[0].data == normalised(data)
    assert parsed.events[0].type == (event or "message")
    assert parsed.events[0].last_event_id == (event_id or "")
    assert len(parsed.events) == 1


@settings(max_examples=150, deadline=None)
@given(bad=text_with_breaker, where=st.sampled_from(["event", "event_id"]))
def test_frame_rejects_line_breaks_and_nul_in_id_and_event(bad, where):
    with pytest.raises(FrameError):
        encode_frame("x", **{where: bad})


@settings(max_examples=150, deadline=None)
@given(payload=json_values, event=st.none() | field_text, event_id=st.none() | field_text)
def test_json_frame_is_one_event_with_one_data_line(sse, payload, event, event_id):
    parsed = sse(encode_json_frame(payload, event=event, event_id=event_id))

    assert parsed.complete
    (block,) = parsed.blocks
    assert [name for name, _ in block.fields].count("data") == 1
    assert len(block.fields) == 1 + (event is not None) + (event_id is not None)
    (received,) = parsed.events
    assert json.loads(received.data) == payload


@settings(max_examples=150, deadline=None)
@given(text=any_text)
def test_a_positions_comment_never_becomes_a_field_or_an_event(sse, text):
    parsed = sse(encode_position("e1-9-0", text))

    assert parsed.complete
    (block,) = parsed.blocks
    assert block.fields == [("id", "e1-9-0")]
    assert parsed.events == []
    assert block.comments == normalised(text).split("\n")


message_texts = st.text(max_size=30) | any_text


@settings(max_examples=150, deadline=None)
@given(
    message_type=st.sampled_from(MESSAGE_TYPES),
    text=message_texts,
    source=any_text.filter(lambda s: 0 < len(s) <= 128),
    channel=st.from_regex(r"[A-Za-z0-9_.:@-]{1,20}", fullmatch=True),
    named=st.booleans(),
    position=st.tuples(st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True),
                       st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
)
def test_message_frame_of_a_validated_message_is_one_event(
        sse, message_type, text, source, channel, named, position):
    factory = MessageFactory(message_ttl=3600, max_message_bytes=65536)
    raw = {"type": message_type, "service": "svc", "target": {"channel": channel},
           "data": {"message": text, "k" + text: [text]}, "source": source}
    try:
        message = factory.build(raw)
    except ValidationError:  # a source with control characters is refused: fine
        return
    event_id = Position(*position).event_id

    frame = encode_message_frame(event_id, message.type if named else None, message.body)

    parsed = sse(frame)
    assert parsed.complete
    (block,) = parsed.blocks
    assert len(block.fields) == (3 if named else 2)
    (received,) = parsed.events
    assert received.data == message.body.decode("utf-8")
    assert received.type == (message_type if named else "message")
    assert received.last_event_id == event_id
    assert json.loads(received.data)["data"]["message"] == text


def test_an_entrys_frames_are_encoded_once_and_shared():
    entry = Entry(5, 1, "ep", ("user:u1",), "progress", b'{"n":1}', 0)

    named = message_frame(entry, True)
    plain = message_frame(entry, False)

    assert named == b'id: ep-5-1\nevent: progress\ndata: {"n":1}\n\n'
    assert plain == b'id: ep-5-1\ndata: {"n":1}\n\n'
    assert message_frame(entry, True) is named
    assert message_frame(entry, False) is plain
