"""Properties of the message validator and the SSE frame encoder (hypothesis).

Whatever a publisher sends, an accepted message becomes exactly one SSE frame whose
fields are the ones the service meant: no value can end a field early, start a new one or
split the frame. Values that cannot be placed in a field are refused, never mangled.
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushservice.engine.sse import (
    FrameError,
    encode_frame,
    encode_json_frame,
    encode_message_frame,
    encode_position,
)
from pushservice.errors import PayloadTooLargeError, ValidationError
from pushservice.message import MESSAGE_TYPES, MessageFactory, is_valid_name
from tests.support.sse_client import SSEParser

PROPERTIES = settings(max_examples=200, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])

# Text that favours what breaks SSE and logs: CR, LF, NUL, the Unicode line separators,
# field syntax, and non-ASCII. No lone surrogates: they cannot be UTF-8 (and the JSON
# parser refuses them before validation ever sees them).
BREAKERS = "\r\n\x00\u2028\u2029\x85\x7f\x1b:, *?[]é中✅"
hostile_text = st.text(
    alphabet=st.one_of(st.sampled_from(BREAKERS),
                       st.characters(blacklist_categories=("Cs",))),
    max_size=40)
name_like = st.one_of(st.from_regex(r"[A-Za-z0-9_.:@-]{1,20}", fullmatch=True), hostile_text)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), hostile_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(hostile_text, inner, max_size=4)),
    max_leaves=12)
valid_names = st.from_regex(r"[A-Za-z0-9_.:@-]{1,20}", fullmatch=True)
targets = st.dictionaries(
    st.one_of(st.sampled_from(["channel", "user_id", "session_id", "kb_id", "task_id"]),
              hostile_text),
    st.one_of(name_like, st.integers(), st.lists(name_like, max_size=3), json_values),
    max_size=4)
# Mostly-valid envelopes whose free-form parts (data, source, metadata extras, ids) are
# hostile, so that many are accepted; and anything at all, so that refusals are covered.
likely_valid = st.fixed_dictionaries(
    {"type": st.sampled_from(MESSAGE_TYPES),
     "service": st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True),
     "target": st.dictionaries(st.sampled_from(["channel", "user_id", "kb_id", "task_id"]),
                               st.one_of(valid_names, st.lists(valid_names, min_size=1,
                                                               max_size=3)),
                               min_size=1, max_size=3),
     "data": st.dictionaries(hostile_text, json_values, max_size=5)},
    optional={"id": name_like, "source": hostile_text,
              "timestamp": st.sampled_from(["2025-07-30T15:10:00.123Z", "2025-07-30"]),
              "metadata": st.fixed_dictionaries(
                  {}, optional={"priority": st.sampled_from(["low", "urgent"]),
                                "extra\r\n": json_values, "note": hostile_text})},
)
anything = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(MESSAGE_TYPES), hostile_text),
     "service": name_like},
    optional={"id": name_like, "timestamp": hostile_text, "source": hostile_text,
              "target": targets, "data": st.dictionaries(hostile_text, json_values, max_size=4),
              "metadata": st.dictionaries(st.sampled_from(["priority", "ttl", "extra"]),
                                          json_values, max_size=3)},
)
raw_messages = st.one_of(likely_valid, anything)
event_ids = st.from_regex(r"[0-9a-f]{8}-[0-9]{1,13}-[0-9]{1,3}", fullmatch=True)


def _parse(frame: bytes):
    parser = SSEParser()
    frames = parser.feed(frame.decode("utf-8"))
    return frames, parser


def _accepted(raw, broadcast=False):
    factory = MessageFactory(3600, 8192)
    try:
        return factory.build(raw, broadcast=broadcast)
    except (ValidationError, PayloadTooLargeError):
        return None


@PROPERTIES
@given(raw=raw_messages, event_id=event_ids, named=st.booleans(), broadcast=st.booleans())
def test_an_accepted_message_is_exactly_one_frame_with_its_own_fields(raw, event_id, named,
                                                                      broadcast):
    message = _accepted(raw, broadcast)
    if message is None:
        return
    frame = encode_message_frame(event_id, message.type if named else None, message.body)
    assert b"\r" not in frame and frame.endswith(b"\n\n") and frame.count(b"\n\n") == 1
    for line in frame[:-2].split(b"\n"):
        assert line.startswith((b"id: ", b"event: ", b"data: ")), line
    frames, parser = _parse(frame)
    assert len(frames) == 1
    (parsed,) = frames
    assert parsed.id == event_id and parser.last_event_id == event_id
    assert parsed.event == (message.type if named else None)
    assert parsed.data == message.body.decode("utf-8")
    assert parsed.retry is None and parsed.comments == ()
    assert json.loads(parsed.data)["type"] in MESSAGE_TYPES


@PROPERTIES
@given(raw=raw_messages, broadcast=st.booleans())
def test_accepted_messages_route_by_clean_topics(raw, broadcast):
    message = _accepted(raw, broadcast)
    if message is None:
        return
    assert message.topics
    # Topics are stored comma-joined beside the message: the round trip is exact.
    assert tuple(",".join(message.topics).split(",")) == message.topics
    for topic in message.topics:
        assert topic == "*" if broadcast else is_valid_name(topic, 200), topic
    assert is_valid_name(message.id) and is_valid_name(message.service)
    assert message.type in MESSAGE_TYPES
    assert b"\n" not in message.body and b"\r" not in message.body


@PROPERTIES
@given(value=hostile_text)
def test_names_never_hold_separators_controls_or_globs(value):
    if is_valid_name(value):
        assert value.isascii() and value.isprintable() and 1 <= len(value) <= 128
        assert not set(value) & set(" ,*?[]/\\\"'%")


@PROPERTIES
@given(data=hostile_text, event=st.one_of(st.none(), hostile_text),
       event_id=st.one_of(st.none(), hostile_text), retry=st.one_of(st.none(),
                                                                   st.integers(0, 10**6)))
def test_encode_frame_keeps_fields_or_refuses_them(data, event, event_id, retry):
    breakers = set("\r\n\x00")
    if (event and breakers & set(event)) or (event_id and breakers & set(event_id)):
        with pytest.raises(FrameError):
            encode_frame(data, event=event, event_id=event_id, retry_ms=retry)
        return
    frames, parser = _parse(encode_frame(data, event=event, event_id=event_id, retry_ms=retry))
    assert len(frames) == 1
    (parsed,) = frames
    assert parsed.data == data.replace("\r\n", "\n").replace("\r", "\n")
    assert parsed.event == event and parsed.id == event_id and parsed.retry == retry
    assert parser.last_event_id == (event_id or "")


@PROPERTIES
@given(payload=json_values, event=st.sampled_from(["connected", "closing", "history-lost"]))
def test_json_frames_carry_their_payload_on_one_data_line(payload, event):
    frame = encode_json_frame(payload, event)
    assert frame.count(b"\ndata: ") == 1
    (parsed,), _ = _parse(frame)
    assert parsed.event == event
    assert json.loads(parsed.data) == json.loads(orjson.dumps(payload))


@PROPERTIES
@given(text=hostile_text, event_id=event_ids)
def test_positions_never_dispatch_or_inject(text, event_id):
    frames, _ = _parse(encode_position(event_id, text))
    assert len(frames) == 1
    (parsed,) = frames
    assert parsed.data is None and parsed.event is None and parsed.id == event_id
