"""The Redis Stream store on fakeredis: publishing (idempotent, all in one script), reading,
replay ranges, what resuming needs to know, and the stream's epoch."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from pushservice.engine.position import parse_event_id
from pushservice.errors import StoreUnavailableError
from pushservice.message import MessageFactory
from pushservice.store import MessageStore, translate_errors
from pushservice.store import messages as messages_module
from pushservice.store.messages import REQUEST_MEMORY_SECONDS


@pytest.fixture
def messages():
    factory = MessageFactory(message_ttl=3600, max_message_bytes=65536)

    def build(n: int = 0, broadcast: bool = False, **changes):
        raw = {"type": "progress", "service": "svc", "target": {"user_id": "u1"},
               "data": {"n": n, "message": "正在生成向量嵌入..."}, **changes}
        return factory.build(raw, broadcast=broadcast)

    return build


def stream_entries(fake_redis, store: MessageStore) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return fake_redis.xrange(store.stream_key)


# -- publishing -------------------------------------------------------------------------


def test_publish_returns_event_ids_carrying_the_epoch(store, messages):
    (published,) = store.publish([messages(1)])

    epoch = store.current_epoch()
    assert published.position.epoch == epoch
    assert published.duplicate is False
    assert parse_event_id(published.position.event_id) == published.position
    assert abs(published.position.ms - time.time() * 1000) < 60_000


def test_published_entry_carries_topics_type_body_expiry_and_epoch(store, messages,
                                                                     fake_redis):
    message = messages(1, target={"user_id": "u1", "channel": "news"})
    (published,) = store.publish([message])

    ((entry_id, fields),) = stream_entries(fake_redis, store)
    assert entry_id.decode() == published.position.stream_id
    assert set(fields) == {b"h", b"m", b"p", b"b"}
    assert fields[b"p"] == b"0-0"  # the first entry ever: nothing before it
    assert fields[b"b"] == b"0"  # nor any bytes before it
    epoch, type_, expires, topics = fields[b"h"].decode().split(" ")
    assert topics == "user:u1,news,service:svc"
    assert type_ == "progress"
    assert fields[b"m"] == message.body
    assert "正在生成向量嵌入...".encode() in fields[b"m"]
    assert int(expires) == message.expires_at_ms
    assert epoch == published.position.epoch


def test_publish_of_a_batch_writes_one_entry_per_message_in_order(store, messages,
                                                                   fake_redis):
    batch = [messages(n) for n in range(5)]

    results = store.publish(batch)

    assert [r.message for r in results] == batch
    keys = [r.position.key for r in results]
    assert keys == sorted(keys) and len(set(keys)) == 5
    entries = stream_entries(fake_redis, store)
    assert [json.loads(fields[b"m"])["data"]["n"] for _, fields in entries] == [0, 1, 2, 3, 4]
    assert [e.decode() for e, _ in entries] == [r.position.stream_id for r in results]


def test_broadcast_entry_is_on_the_broadcast_topic(store, messages, fake_redis):
    store.publish([messages(1, broadcast=True)])

    ((_, fields),) = stream_entries(fake_redis, store)
    assert fields[b"h"].decode().split(" ")[3] == "*"


def test_a_repeated_client_id_is_a_duplicate_of_the_original(store, messages, fake_redis):
    (first,) = store.publish([messages(1, id="order-42")])
    (again,) = store.publish([messages(2, id="order-42")])

    assert first.duplicate is False
    assert again.duplicate is True
    assert again.position == first.position
    assert len(stream_entries(fake_redis, store)) == 1


def test_a_client_id_repeated_within_one_batch_is_written_once(store, messages, fake_redis):
    results = store.publish([messages(1, id="order-7"), messages(2, id="order-7"),
                             messages(3)])

    assert [r.duplicate for r in results] == [False, True, False]
    assert results[1].position == results[0].position
    assert len(stream_entries(fake_redis, store)) == 2


def test_a_client_id_is_remembered_for_the_message_ttl(store, messages, fake_redis):
    store.publish([messages(1, id="order-9", metadata={"ttl": 120})])

    ids = store.keys.message_prefix + "svc"
    assert fake_redis.hexists(ids, "order-9")
    expiry_ms = fake_redis.zscore(ids + ":expiry", "order-9")
    assert 110_000 <= expiry_ms - time.time() * 1000 <= 120_000
    assert 110 <= fake_redis.ttl(ids) <= 120  # the service's ids go with the last of them


def test_a_remembered_id_is_a_duplicate_until_its_ttl_ends(store, messages, fake_redis):
    (first,) = store.publish([messages(1, id="order-9", metadata={"ttl": 120})])
    (again,) = store.publish([messages(2, id="order-9", metadata={"ttl": 120})])
    assert again.duplicate and again.event_id == first.event_id
    # Its time is up: the id is free again (an expired one is not a duplicate).
    fake_redis.zadd(store.keys.message_prefix + "svc:expiry", {"order-9": 1})
    (later,) = store.publish([messages(3, id="order-9")])
    assert not later.duplicate and later.event_id != first.event_id


def test_each_service_remembers_at_most_message_ids_per_service(fake_clients, settings,
                                                                messages, fake_redis):
    store = MessageStore(settings.replace(message_ids_per_service=5))
    store.publish([messages(n, id=f"order-{n}") for n in range(8)])
    store.publish([messages(8, id="order-8")])

    ids = store.keys.message_prefix + "svc"
    assert sorted(fake_redis.hkeys(ids)) == sorted(
        f"order-{n}".encode() for n in range(4, 9))
    assert fake_redis.zcard(ids + ":expiry") == 5
    # A forgotten id is published again (the price of the bound), a kept one is not.
    assert not store.publish([messages(9, id="order-0")])[0].duplicate
    assert store.publish([messages(10, id="order-8")])[0].duplicate
    store.close()


def test_the_stream_holds_at_most_stream_max_bytes(fake_clients, settings, messages,
                                                   fake_redis):
    store = MessageStore(settings.replace(stream_max_bytes=20_000))
    for n in range(40):
        store.publish([messages(n, data={"n": n, "pad": "x" * 1000})])

    entries = stream_entries(fake_redis, store)
    held = sum(len(fields[b"h"]) + len(fields[b"m"]) + 64 for _, fields in entries)
    assert held <= 20_000
    assert len(entries) >= 12  # the newest ones, as many as fit (about 1.4 kB each)
    assert json.loads(entries[-1][1][b"m"])["data"]["n"] == 39
    store.close()


def test_one_publish_cuts_as_many_of_the_oldest_entries_as_its_bytes_need(
        fake_clients, settings, messages, fake_redis):
    # The oldest entry is read alone first, then pages of 100: 150 small entries must
    # go for one large batch, across both kinds of read.
    store = MessageStore(settings.replace(stream_max_bytes=60_000))
    for n in range(160):
        store.publish([messages(n)])
    small = stream_entries(fake_redis, store)
    assert len(small) == 160

    store.publish([messages(1000 + n, data={"pad": "x" * 1000}) for n in range(40)])

    def size(fields: dict[bytes, bytes]) -> int:
        # As the stream counts it: the header without its epoch, the body, 64 bytes more.
        return len(fields[b"h"].split(b" ", 1)[1]) + len(fields[b"m"]) + 64

    entries = stream_entries(fake_redis, store)
    held = sum(size(fields) for _, fields in entries)
    assert held <= 60_000
    kept_small = [entry_id for entry_id, _ in entries[:-40]]
    assert len(small) - len(kept_small) > 100
    # The oldest went, the newest stayed: no more went than the bytes needed.
    assert kept_small == [entry_id for entry_id, _ in small[-len(kept_small):]]
    assert held + size(small[-len(kept_small) - 1][1]) > 60_000
    store.close()


def test_messages_without_client_ids_are_never_duplicates(store, messages, fake_redis):
    results = store.publish([messages(1)]) + store.publish([messages(1)])

    assert [r.duplicate for r in results] == [False, False]
    assert len(stream_entries(fake_redis, store)) == 2


def test_a_retried_request_returns_the_first_answer_without_writing_twice(
        store, messages, fake_redis, monkeypatch):
    request = uuid.uuid4()
    monkeypatch.setattr(messages_module.uuid, "uuid4", lambda: request)
    batch = [messages(1), messages(2, id="order-1")]

    first = store.publish(batch)
    retried = store.publish(batch)

    assert [r.position for r in retried] == [r.position for r in first]
    assert [r.duplicate for r in retried] == [False, False]
    assert len(stream_entries(fake_redis, store)) == 2
    (remembered,) = [k for k in fake_redis.keys("*") if request.hex.encode() in k]
    assert 0 < fake_redis.ttl(remembered) <= REQUEST_MEMORY_SECONDS


def test_published_messages_are_counted_once(store, messages, fake_redis, monkeypatch):
    store.publish([messages(1), messages(2, id="order-3")])
    store.publish([messages(3, id="order-3")])  # a duplicate is not published again
    request = uuid.uuid4()
    monkeypatch.setattr(messages_module.uuid, "uuid4", lambda: request)
    store.publish([messages(4)])
    store.publish([messages(4)])  # a retried request is not published again

    assert int(fake_redis.hget(store.keys.stats, "published")) == 3
    assert store.length() == 3


def test_each_request_is_remembered_separately(store, messages, fake_redis):
    store.publish([messages(1)])
    store.publish([messages(2)])

    assert len(stream_entries(fake_redis, store)) == 2


def test_entries_older_than_message_ttl_are_trimmed_on_publish(store, messages, fake_redis):
    # Trimming is approximate: Redis drops whole stream nodes (100 entries each).
    for seq in range(200):
        fake_redis.xadd(store.stream_key, {"h": "e0 info 0 user:u1", "m": "{}"},
                        id=f"1000-{seq}")

    (published,) = store.publish([messages(1)])

    assert [e.decode() for e, _ in stream_entries(fake_redis, store)] == [
        published.position.stream_id]


# -- reading ----------------------------------------------------------------------------


def test_read_returns_entries_after_a_key(store, messages):
    results = store.publish([messages(n) for n in range(4)])
    client = store.reader_client()

    entries = store.read(client, results[1].position.key, block_ms=10, count=100)

    assert [e.event_id for e in entries] == [r.position.event_id for r in results[2:]]
    first = entries[0]
    assert first.topics == ("user:u1", "service:svc")
    assert first.type == "progress"
    assert first.body == results[2].message.body
    assert first.expires_at_ms == results[2].message.expires_at_ms
    assert first.epoch == results[2].position.epoch
    assert first.key == results[2].position.key


def test_read_honours_count(store, messages):
    results = store.publish([messages(n) for n in range(4)])

    entries = store.read(store.reader_client(), (0, 0), block_ms=10, count=3)

    assert [e.key for e in entries] == [r.position.key for r in results[:3]]


def test_read_of_nothing_new_returns_nothing(store, messages):
    (published,) = store.publish([messages(1)])

    assert store.read(store.reader_client(), published.position.key, block_ms=1,
                      count=10) == []


def test_read_range_is_exclusive_of_its_start_and_bounded_by_count(store, messages):
    results = store.publish([messages(n) for n in range(5)])

    entries = store.read_range(results[0].position.key, 2)

    assert [e.key for e in entries] == [r.position.key for r in results[1:3]]
    assert store.read_range(results[-1].position.key, 10) == []
    assert len(store.read_range((0, 0), 10)) == 5


def test_read_range_of_a_missing_stream_is_empty(store):
    assert store.read_range((0, 0), 10) == []


def test_head_key_is_the_newest_id_ever_generated(store, messages, fake_redis):
    assert store.head_key() == (0, 0)

    results = store.publish([messages(1), messages(2)])

    assert store.head_key() == results[-1].position.key
    assert store.head_key(store.reader_client()) == results[-1].position.key
    fake_redis.xtrim(store.stream_key, maxlen=0)
    assert store.head_key() == results[-1].position.key  # even once trimmed away


def test_each_entry_names_the_one_written_before_it(store, messages, fake_redis):
    first = store.publish([messages(0), messages(1)])
    store.publish([messages(2, id="mine")])
    repeat = store.publish([messages(2, id="mine"), messages(3)])  # one duplicate

    entries = stream_entries(fake_redis, store)
    ids = [entry_id for entry_id, _ in entries]
    assert [fields[b"p"] for _, fields in entries] == [b"0-0", *ids[:-1]]
    assert repeat[0].duplicate and ids[-1].decode() == repeat[1].stream_id
    assert ids[0].decode() == first[0].stream_id


def test_an_emptied_stream_still_chains_to_its_last_id(store, messages, fake_redis):
    (old,) = store.publish([messages(0)])
    fake_redis.xtrim(store.stream_key, maxlen=0)

    store.publish([messages(1)])

    ((_, fields),) = stream_entries(fake_redis, store)
    assert fields[b"p"].decode() == old.stream_id


def test_stream_info_names_what_came_before_the_first_kept_entry(store, messages):
    trimming = store.settings.replace(stream_max_length=100)
    small = type(store)(trimming, store.connections)
    results = [p for start in range(0, 400, 20)
               for p in small.publish([messages(n) for n in range(start, start + 20)])]

    info = small.stream_info()

    keys = [p.position.key for p in results]
    first = keys.index(info.first)
    assert first > 0, "nothing was trimmed"
    assert info.first_predecessor == keys[first - 1]
    assert info.entries_added == 400  # fakeredis speaks Redis 7 here
    assert info.length == 400 - first


# -- what resuming needs to know --------------------------------------------------------


def test_stream_info_of_a_missing_stream(store):
    info = store.stream_info()

    assert (info.epoch, info.length, info.first, info.last_generated) == (None, 0, None, None)
    assert info.max_deleted is None


def test_stream_info_of_a_missing_stream_with_an_epoch(store):
    epoch = store.current_epoch()

    info = store.stream_info()

    assert info.epoch == epoch
    assert info.length == 0


def test_stream_info_of_a_present_stream(store, messages):
    results = store.publish([messages(n) for n in range(3)])

    info = store.stream_info()

    assert info.epoch == results[0].position.epoch
    assert info.length == 3
    assert info.first == results[0].position.key
    assert info.last_generated == results[-1].position.key
    assert info.max_deleted is None or info.max_deleted < info.first


def test_stream_info_after_everything_was_trimmed(store, messages, fake_redis):
    results = store.publish([messages(n) for n in range(3)])
    fake_redis.xtrim(store.stream_key, maxlen=0)

    info = store.stream_info()

    assert info.length == 0
    assert info.first is None
    assert info.last_generated == results[-1].position.key


# -- the epoch --------------------------------------------------------------------------


def test_epoch_is_created_once_and_stays(store, settings, messages):
    epoch = store.current_epoch()

    assert epoch.isalnum()
    assert store.current_epoch() == epoch
    assert store.current_epoch(store.reader_client()) == epoch
    assert store.publish([messages(1)])[0].position.epoch == epoch
    assert MessageStore(settings).current_epoch() == epoch  # another worker, same Redis


def test_first_publish_creates_the_epoch(store, messages):
    (published,) = store.publish([messages(1)])

    assert store.current_epoch() == published.position.epoch


def test_a_lost_epoch_is_replaced_by_a_new_one(store, messages, fake_redis):
    old = store.current_epoch()
    fake_redis.flushall()  # Redis lost its data

    new = store.current_epoch()

    assert new != old
    assert store.publish([messages(1)])[0].position.epoch == new


def test_key_names_share_one_hash_slot(store):
    for key in (store.stream_key, store.epoch_key):
        assert key.startswith("{pushservice}:")


# -- failures ---------------------------------------------------------------------------


def test_unreachable_redis_is_store_unavailable(store, messages, fake_redis_server):
    fake_redis_server.connected = False

    for call in (lambda: store.publish([messages(1)]), lambda: store.read_range((0, 0), 1),
                 store.stream_info, store.current_epoch, store.head_key, store.ping):
        with pytest.raises(StoreUnavailableError) as caught:
            call()
        assert caught.value.status == 503
        assert caught.value.headers() == {"Retry-After": "2"}
        assert isinstance(caught.value.__cause__, redis.ConnectionError)


@pytest.mark.parametrize("reply", ["LOADING Redis is loading the dataset in memory",
                                   "READONLY You can't write against a read only replica.",
                                   "MASTERDOWN Link with MASTER is down"])
def test_transient_redis_replies_are_store_unavailable(reply):
    @translate_errors
    def failing():
        raise redis.ResponseError(reply)

    with pytest.raises(StoreUnavailableError):
        failing()


def test_other_redis_errors_are_not_hidden():
    @translate_errors
    def failing():
        raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")

    with pytest.raises(redis.ResponseError):
        failing()


def test_timeouts_are_store_unavailable():
    @translate_errors
    def failing():
        raise redis.TimeoutError("Timeout reading from socket")

    with pytest.raises(StoreUnavailableError):
        failing()


def test_ping_measures_a_round_trip(store):
    assert 0 <= store.ping() < 5
