"""Message validation: what a publisher may send, what it is told when it may not, and the
topics a message is routed by."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pushservice.errors import PayloadTooLargeError, ValidationError
from pushservice.message import MESSAGE_TYPES, MessageFactory, Problems, is_valid_name
from tests.support.examples import SPEC_EXAMPLE

NOW = 1753859400.123


BASE = {"type": "info", "service": "svc", "target": {"user_id": "u1"}}


def msg(**changes):
    """BASE with top-level fields replaced; a value of ... removes the field."""
    raw = {**BASE, **changes}
    return {key: value for key, value in raw.items() if value is not ...}


def target(**keys):
    return msg(target=keys)


def data(**values):
    return msg(type="progress", data=values)


def metadata(**values):
    return msg(metadata=values)


@pytest.fixture
def factory() -> MessageFactory:
    return MessageFactory(message_ttl=3600, max_message_bytes=64 * 1024)


def problem_fields(factory: MessageFactory, raw, broadcast: bool = False) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        factory.build(raw, broadcast=broadcast, now=NOW)
    assert caught.value.status == 400
    return [item["field"] for item in caught.value.details]


# -- the accept/reject table -----------------------------------------------------------

ACCEPTED = [
    # (raw, broadcast, topics)
    (BASE, False, ("user:u1", "service:svc")),
    (target(channel="news"), False, ("news", "service:svc")),
    (target(channel=["news", "sport"]), False, ("news", "sport", "service:svc")),
    (target(channel=["news", "news"]), False, ("news", "service:svc")),
    (target(user_id=123), False, ("user:123", "service:svc")),
    (target(session_id="s1"), False, ("session:s1", "service:svc")),
    (target(kb_id="kb789", task_id="t-1"), False, ("kb:kb789", "task:t-1", "service:svc")),
    (target(user_id="u1", channel="user:u1"), False, ("user:u1", "service:svc")),
    (target(channel="a.b:c@d-e_f"), False, ("a.b:c@d-e_f", "service:svc")),
    (target(channel="c" * 128), False, ("c" * 128, "service:svc")),
    (target(long_name_with_digits_9_id="x"), False, ("long_name_with_digits_9:x",
                                                     "service:svc")),
    (msg(service="s" * 64), False, ("user:u1", "service:" + "s" * 64)),
    (msg(service="knowledge-service.v2_1"), False, ("user:u1",
                                                   "service:knowledge-service.v2_1")),
    (msg(target=...), True, ("*",)),
    (BASE, True, ("*",)),
    (msg(target={}), True, ("*",)),
    (data(progress=0), False, ("user:u1", "service:svc")),
    (data(progress=100), False, ("user:u1", "service:svc")),
    (data(progress=65.5), False, ("user:u1", "service:svc")),
    (msg(data={"progress": 500}), False, ("user:u1", "service:svc")),
    (msg(data={"nested": {"list": [1, 2.5, None, True, "x"]}}), False,
     ("user:u1", "service:svc")),
    (metadata(ttl=1), False, ("user:u1", "service:svc")),
    (metadata(ttl=3600, priority="urgent", retry_count=3), False, ("user:u1", "service:svc")),
    (metadata(priority="low"), False, ("user:u1", "service:svc")),
    (metadata(trace="abc"), False, ("user:u1", "service:svc")),
    (msg(source="document_processing"), False, ("user:u1", "service:svc")),
    (msg(source="文档处理"), False, ("user:u1", "service:svc")),
    (msg(timestamp="2025-07-30T15:10:00+08:00"), False, ("user:u1", "service:svc")),
    (msg(id="order-42:v1@svc"), False, ("user:u1", "service:svc")),
    (msg(id=None, timestamp=None, source=None), False, ("user:u1", "service:svc")),
]

REJECTED = [
    # (raw, broadcast, the field named in the problems)
    ([], False, ""),
    ("a message", False, ""),
    (None, False, ""),
    (42, False, ""),
    (msg(type=...), False, "type"),
    (msg(type=None), False, "type"),
    (msg(type="notice"), False, "type"),
    (msg(type="INFO"), False, "type"),
    (msg(type=1), False, "type"),
    (msg(type=["info"]), False, "type"),
    (msg(service=...), False, "service"),
    (msg(service=""), False, "service"),
    (msg(service=5), False, "service"),
    (msg(service="knowledge service"), False, "service"),
    (msg(service="svc:x"), False, "service"),
    (msg(service="s" * 65), False, "service"),
    (msg(service="svc\n"), False, "service"),
    (msg(service="svc\x00"), False, "service"),
    (msg(target=...), False, "target"),
    (msg(target={}), False, "target"),
    (msg(target=None), False, "target"),
    (msg(target=[]), False, "target"),
    (msg(target="user:u1"), False, "target"),
    (msg(target="user:u1"), True, "target"),
    (target(user="u1"), False, "target.user"),
    (target(id="1"), False, "target.id"),
    (target(User_id="u1"), False, "target.User_id"),
    (target(user_id="u1", group="g"), False, "target.group"),
    (target(user_id=True), False, "target.user_id"),
    (target(user_id=1.5), False, "target.user_id"),
    (target(user_id=["u1"]), False, "target.user_id"),
    (target(user_id={"id": "u1"}), False, "target.user_id"),
    (target(user_id=None), False, "target.user_id"),
    (target(user_id=""), False, "target.user_id"),
    (target(user_id="u 1"), False, "target.user_id"),
    (target(user_id="u\n1"), False, "target.user_id"),
    (target(user_id="u\r1"), False, "target.user_id"),
    (target(user_id="u\x001"), False, "target.user_id"),
    (target(session_id="s" * 129), False, "target.session_id"),
    (target(channel=[]), False, "target.channel"),
    (target(channel=["news", 1]), False, "target.channel"),
    (target(channel=[["news"]]), False, "target.channel"),
    (target(channel=None), False, "target.channel"),
    (target(channel=7), False, "target.channel"),
    (target(channel="news,sport"), False, "target.channel"),
    (target(channel="*"), False, "target.channel"),
    (target(channel="news\r\nevent: x"), False, "target.channel"),
    (target(channel="news\x00"), False, "target.channel"),
    (target(channel="新闻"), False, "target.channel"),
    (target(channel="c" * 129), False, "target.channel"),
    (msg(priority="high"), False, "priority"),
    (msg(Type="info"), False, "Type"),
    (msg(id=123), False, "id"),
    (msg(id=""), False, "id"),
    (msg(id="has space"), False, "id"),
    (msg(id="a\nb"), False, "id"),
    (msg(id="i" * 129), False, "id"),
    (msg(timestamp="yesterday"), False, "timestamp"),
    (msg(timestamp=1753859400), False, "timestamp"),
    (msg(timestamp="2025-07-30T15:10:00\n"), False, "timestamp"),
    (msg(source=""), False, "source"),
    (msg(source=7), False, "source"),
    (msg(source="line\nbreak"), False, "source"),
    (msg(source="tab\there"), False, "source"),
    (msg(source="s" * 129), False, "source"),
    (msg(data=[1, 2]), False, "data"),
    (msg(data="text"), False, "data"),
    (msg(data=None), False, "data"),
    (msg(data=3), False, "data"),
    (data(progress=-1), False, "data.progress"),
    (data(progress=100.5), False, "data.progress"),
    (data(progress=True), False, "data.progress"),
    (data(progress="50"), False, "data.progress"),
    (data(progress=None), False, "data.progress"),
    (msg(metadata=[]), False, "metadata"),
    (msg(metadata=None), False, "metadata"),
    (metadata(priority="critical"), False, "metadata.priority"),
    (metadata(priority=None), False, "metadata.priority"),
    (metadata(ttl=3600.0), False, "metadata.ttl"),
    (metadata(ttl=0), False, "metadata.ttl"),
    (metadata(ttl=-5), False, "metadata.ttl"),
    (metadata(ttl=3601), False, "metadata.ttl"),
    (metadata(ttl=True), False, "metadata.ttl"),
    (metadata(ttl="60"), False, "metadata.ttl"),
    (metadata(retry_count=-1), False, "metadata.retry_count"),
    (metadata(retry_count=False), False, "metadata.retry_count"),
    (metadata(retry_count=1.0), False, "metadata.retry_count"),
    (msg(data={"huge": 2**64}), False, ""),
]


@pytest.mark.parametrize("raw, broadcast, topics", ACCEPTED)
def test_accepted_messages_are_routed_by_their_topics(factory, raw, broadcast, topics):
    message = factory.build(raw, broadcast=broadcast, now=NOW)

    assert message.topics == topics
    body = json.loads(message.body)
    assert body["type"] == raw["type"]
    assert body["service"] == raw["service"]


@pytest.mark.parametrize("raw, broadcast, field", REJECTED)
def test_rejected_messages_name_the_field_at_fault(factory, raw, broadcast, field):
    assert field in problem_fields(factory, raw, broadcast)


def test_the_table_is_large():
    assert len(ACCEPTED) + len(REJECTED) >= 40


@pytest.mark.parametrize("message_type", MESSAGE_TYPES)
def test_each_of_the_seven_types_is_accepted_and_kept(factory, message_type):
    message = factory.build(msg(type=message_type), now=NOW)

    assert message.type == message_type
    assert json.loads(message.body)["type"] == message_type


def test_there_are_exactly_the_seven_types_of_the_specification():
    assert set(MESSAGE_TYPES) == {"progress", "status", "error", "success", "warning", "info",
                                  "custom"}


# -- the specification's example -------------------------------------------------------


def test_specification_example_is_accepted_byte_for_byte(factory):
    message = factory.build(SPEC_EXAMPLE, now=NOW)

    expected = json.dumps(SPEC_EXAMPLE, ensure_ascii=False, separators=(",", ":"))
    assert message.body == expected.encode("utf-8")
    assert "正在生成向量嵌入...".encode() in message.body
    assert message.id == "msg_1753859400_001"
    assert message.client_id is True
    assert message.type == "progress"
    assert message.service == "knowledge-service"
    assert message.topics == ("user:user123", "session:session456", "kb:kb789",
                              "service:knowledge-service")


# -- what the service fills in ----------------------------------------------------------


def test_id_and_timestamp_are_assigned_when_absent(factory):
    message = factory.build(BASE, now=NOW)

    body = json.loads(message.body)
    assert message.client_id is False
    assert body["id"] == message.id
    assert re.fullmatch(r"msg_1753859400_[0-9a-f]{8}\d{6}", message.id)
    assert body["timestamp"] == "2025-07-30T07:10:00.123Z"


def test_assigned_ids_are_unique(factory):
    ids = {factory.build(BASE, now=NOW).id for _ in range(1000)}

    assert len(ids) == 1000


def test_client_id_and_timestamp_are_kept(factory):
    message = factory.build(msg(id="order-42", timestamp="2025-07-30T15:10:00Z"), now=NOW)

    body = json.loads(message.body)
    assert (message.id, message.client_id) == ("order-42", True)
    assert body["id"] == "order-42"
    assert body["timestamp"] == "2025-07-30T15:10:00Z"


def test_envelope_has_every_field_in_a_fixed_order(factory):
    body = json.loads(factory.build(BASE, now=NOW).body)

    assert list(body) == ["id", "timestamp", "type", "service", "source", "target", "data",
                          "metadata"]
    assert body["source"] is None
    assert body["data"] == {}
    assert body["target"] == {"user_id": "u1"}


def test_metadata_defaults(factory):
    message = factory.build(BASE, now=NOW)

    assert json.loads(message.body)["metadata"] == {"priority": "normal", "ttl": 3600,
                                                    "retry_count": 0}
    assert message.ttl_seconds == 3600
    assert message.expires_at_ms == int(NOW * 1000) + 3600 * 1000


def test_metadata_ttl_shortens_the_life_of_a_message(factory):
    message = factory.build(metadata(ttl=60), now=NOW)

    assert message.ttl_seconds == 60
    assert message.expires_at_ms == int(NOW * 1000) + 60_000


def test_metadata_ttl_limit_follows_message_ttl():
    factory = MessageFactory(message_ttl=120, max_message_bytes=65536)

    assert factory.build(metadata(ttl=120), now=NOW).ttl_seconds == 120
    assert factory.build(BASE, now=NOW).ttl_seconds == 120
    with pytest.raises(ValidationError) as caught:
        factory.build(metadata(ttl=121), now=NOW)
    assert "MESSAGE_TTL" in caught.value.details[0]["error"]


def test_names_found_valid_before_do_not_let_invalid_ones_through(factory):
    # Valid names are remembered (bounded); a bad one is checked every time.
    for n in range(5000):
        factory.build(msg(service=f"svc-{n}", target={"channel": f"c{n}", "user_id": n}))
    for bad in (msg(service="svc 1"), target(channel="c 1"), target(user_id="u,1"),
                msg(service=["svc-1"]), target(channel=[["c1"]]), target(user_id=1.5)):
        with pytest.raises(ValidationError):
            factory.build(bad)
    message = factory.build(msg(service="svc-4999", target={"channel": "c4999"}))
    assert message.topics == ("c4999", "service:svc-4999")


def test_every_problem_is_reported_at_once(factory):
    raw = {"type": "notice", "service": "", "target": {"user_id": True}, "extra": 1,
           "metadata": {"ttl": 0}}

    fields = problem_fields(factory, raw)

    assert sorted(fields) == ["extra", "metadata.ttl", "service", "target.user_id", "type"]


def test_a_missing_routing_key_is_reported_with_the_other_problems(factory):
    fields = problem_fields(factory, msg(type="notice", target={}))

    assert sorted(fields) == ["target", "type"]


def test_validation_error_details_say_where_and_why(factory):
    with pytest.raises(ValidationError) as caught:
        factory.build(msg(type="notice"), now=NOW)

    error = caught.value
    assert error.code == "validation_failed"
    assert error.details == [{"field": "type", "error": "must be one of progress, status, "
                              "error, success, warning, info, custom"}]


def test_send_without_routing_key_says_what_is_needed(factory):
    with pytest.raises(ValidationError) as caught:
        factory.build(msg(target={}), now=NOW)

    (problem,) = caught.value.details
    assert problem["field"] == "target"
    assert "channel" in problem["error"] and "user_id" in problem["error"]


def test_check_records_problems_instead_of_raising(factory):
    problems = Problems()

    assert factory.check(msg(type="notice"), problems) is None
    assert problems
    assert problems.items[0]["field"] == "type"


def test_service_topic_is_always_present_and_last_for_sends(factory):
    for raw, broadcast, _ in ACCEPTED:
        if broadcast:
            continue
        topics = factory.build(raw, now=NOW).topics
        assert topics[-1] == f"service:{raw['service']}"


def test_broadcast_is_on_the_single_broadcast_topic(factory):
    message = factory.build(msg(target=..., type="warning"), broadcast=True, now=NOW)

    assert message.topics == ("*",)
    assert json.loads(message.body)["target"] == {}


def test_a_target_naming_the_service_topic_does_not_repeat_it(factory):
    message = factory.build(target(channel="service:svc"), now=NOW)

    assert message.topics == ("service:svc",)


# -- size -------------------------------------------------------------------------------


def test_oversize_message_is_too_large_not_invalid():
    factory = MessageFactory(message_ttl=3600, max_message_bytes=1024)

    with pytest.raises(PayloadTooLargeError) as caught:
        factory.build(msg(data={"text": "x" * 2000}), now=NOW)

    error = caught.value
    assert error.status == 413
    assert error.code == "message_too_large"
    assert error.details["limit"] == 1024
    assert error.details["bytes"] > 1024


def test_size_limit_counts_encoded_utf8_bytes():
    factory = MessageFactory(message_ttl=3600, max_message_bytes=1024)
    # 300 Chinese characters are 900 bytes of UTF-8: beyond the limit with the envelope.
    with pytest.raises(PayloadTooLargeError):
        factory.build(msg(data={"text": "向" * 300}), now=NOW)
    assert factory.build(msg(data={"text": "x" * 300}), now=NOW)


def test_message_exactly_at_the_limit_is_accepted():
    # The limit counts the stored JSON and the topics stored beside it.
    factory = MessageFactory(message_ttl=3600, max_message_bytes=65536)
    built = factory.build(msg(id="fixed", data={"text": ""}), now=NOW)
    size = len(built.body) + sum(len(topic) + 1 for topic in built.topics)
    exact = MessageFactory(message_ttl=3600, max_message_bytes=size + 100)

    assert len(exact.build(msg(id="fixed", data={"text": "x" * 100}), now=NOW).body) == (
        len(built.body) + 100)
    with pytest.raises(PayloadTooLargeError):
        exact.build(msg(id="fixed", data={"text": "x" * 101}), now=NOW)


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, valid", [
    ("user123", True), ("a.b:c@d-e_f", True), ("x" * 128, True),
    ("", False), ("x" * 129, False), ("a b", False), ("a,b", False), ("*", False),
    ("a\r", False), ("a\n", False), ("a\x00", False), ("新闻", False), ("a/b", False),
])
def test_is_valid_name(name, valid):
    assert is_valid_name(name) is valid


# -- properties -------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
names = st.text(alphabet="abcXYZ019_.:@-,* \n\r\x00新", min_size=0, max_size=12)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "id": names | json_scalars,
        "timestamp": st.sampled_from(["2025-07-30T15:10:00.123Z", "2025-07-30", "nope"])
        | json_scalars,
        "type": st.sampled_from(MESSAGE_TYPES) | json_scalars,
        "service": names | json_scalars,
        "source": st.text(max_size=20) | json_scalars,
        "target": st.dictionaries(
            st.sampled_from(["channel", "user_id", "session_id", "kb_id", "user", "x_id"]),
            names | st.lists(names, max_size=3) | json_scalars, max_size=3) | json_values,
        "data": st.dictionaries(st.sampled_from(["progress", "message", "details"]),
                                json_values, max_size=3) | json_values,
        "metadata": st.dictionaries(st.sampled_from(["priority", "ttl", "retry_count", "x"]),
                                    st.sampled_from(["normal", "high"]) | json_scalars,
                                    max_size=3) | json_values,
    },
)

valid_names = st.from_regex(r"[A-Za-z0-9_.:@-]{1,20}", fullmatch=True)
nearly_valid = st.fixed_dictionaries(
    {
        "type": st.sampled_from(MESSAGE_TYPES),
        "service": st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
        "target": st.dictionaries(st.sampled_from(["channel", "user_id", "session_id"]),
                                  valid_names | st.lists(valid_names, min_size=1, max_size=3),
                                  min_size=1, max_size=3),
    },
    optional={
        "id": valid_names | names,
        "source": st.text(min_size=1, max_size=30),
        "data": st.dictionaries(st.text(max_size=10), json_values, max_size=4),
        "metadata": st.fixed_dictionaries(
            {}, optional={"priority": st.sampled_from(["low", "normal", "high", "urgent"]),
                          "ttl": st.integers(min_value=0, max_value=4000),
                          "retry_count": st.integers(min_value=-1, max_value=5)}),
    },
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(raw=nearly_valid | message_like | json_values, broadcast=st.booleans())
def test_validator_either_rejects_or_returns_one_line_of_json(raw, broadcast):
    factory = MessageFactory(message_ttl=3600, max_message_bytes=2048)
    try:
        message = factory.build(raw, broadcast=broadcast, now=NOW)
    except (ValidationError, PayloadTooLargeError) as error:
        assert error.status in (400, 413)
        event("rejected")
        return
    event("accepted")
    assert b"\n" not in message.body and b"\r" not in message.body
    assert len(message.body) <= 2048
    body = orjson.loads(message.body)
    assert body["id"] == message.id
    assert body["type"] == message.type in MESSAGE_TYPES
    assert body["service"] == message.service
    assert message.topics, "an accepted message is routed somewhere"
    assert len(set(message.topics[:-1])) == len(message.topics[:-1])
    for topic in message.topics:
        assert topic == "*" or is_valid_name(topic), topic
    if broadcast:
        assert message.topics == ("*",)
    else:
        assert f"service:{message.service}" in message.topics
