"""The command packer the service's Redis clients use: the same bytes on the wire as
redis-py's own packer, and the same errors."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from pushservice.store.client import CommandPacker


def redis_py_pack(*args) -> bytes:
    return b"".join(redis.Connection()._command_packer.pack(*args))


def packed(*args) -> bytes:
    return b"".join(CommandPacker().pack(*args))


@pytest.mark.parametrize("args", [
    ("PING",),
    ("SET", "key", "välue", "EX", 60),
    ("XADD", b"{p}:stream", "*", "h", "ep 1 info 0 user:1", "m", b'{"a":"\xe4\xb8\xad"}'),
    ("SCRIPT LOAD", "return 1"),  # several words: several arguments
    (b"CLIENT SETNAME", b"worker"),
    ("EVALSHA", "abc", 2, "k1", "k2", -(2**63), 2**64 - 1, ""),
    ("ZADD", "key", 1.5, "member"),  # a float: redis-py packs it
    ("SET", "key", memoryview(b"value")),
])
def test_commands_are_packed_as_redis_py_packs_them(args):
    assert packed(*args) == redis_py_pack(*args)


@given(st.lists(st.one_of(st.text(), st.binary(), st.integers(-(2**63), 2**64 - 1)),
                max_size=20))
def test_any_plain_arguments_are_packed_as_redis_py_packs_them(arguments):
    try:
        expected = redis_py_pack("EVALSHA", *arguments)
    except UnicodeEncodeError:  # lone surrogates: neither can send them
        with pytest.raises(UnicodeEncodeError):
            packed("EVALSHA", *arguments)
        return
    assert packed("EVALSHA", *arguments) == expected


@pytest.mark.parametrize("bad", [True, None, object(), [1]])
def test_arguments_redis_py_refuses_are_refused_the_same_way(bad):
    with pytest.raises(redis.DataError):
        redis_py_pack("SET", "key", bad)
    with pytest.raises(redis.DataError):
        packed("SET", "key", bad)
