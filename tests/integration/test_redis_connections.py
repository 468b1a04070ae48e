"""The command client's connections against a live Redis: the check for stray data that a
pool makes before each command answers without yielding to gevent's loop, and still
finds data and closed sockets as redis-py's own check does."""

from __future__ import annotations

import gevent
import pytest
import redis

from pushservice.settings import Settings
from pushservice.store import RedisConnections
from tests.support.waiting import wait_until


@pytest.fixture
def connection(redis_server):
    settings = Settings(enable_auth=False, redis_url=redis_server.url(redis_server.fresh_db()))
    connections = RedisConnections(settings)
    pool = connections.command.connection_pool
    conn = pool.get_connection()
    yield conn
    pool.release(conn)
    connections.close()


def test_a_connection_with_nothing_to_read_is_checked_without_yielding(connection):
    others_ran = []
    bystander = gevent.spawn(others_ran.append, "ran")

    assert connection.can_read() is False
    assert others_ran == []  # gevent's poll would have let the bystander run first
    bystander.join()


def test_a_reply_waiting_on_the_socket_is_found(connection):
    connection.send_command("PING")
    # The reply arrives, unread (redis-server may wait for a busy core to answer).
    wait_until(connection.can_read, 5, interval=0.01, message="the PONG to arrive")

    assert connection.can_read() is True
    assert connection.read_response() == b"PONG"
    assert connection.can_read() is False


def test_a_connection_the_server_closed_is_reported(connection, redis_server):
    connection.send_command("CLIENT", "ID")
    client_id = connection.read_response()
    redis.Redis.from_url(redis_server.url(0)).client_kill_filter(_id=client_id)
    gevent.sleep(0.05)

    with pytest.raises(redis.ConnectionError):
        connection.can_read()


def test_the_pool_replaces_a_connection_the_server_closed(redis_server):
    settings = Settings(enable_auth=False, redis_url=redis_server.url(redis_server.fresh_db()))
    connections = RedisConnections(settings)
    client = connections.command
    assert client.ping()
    (client_id,) = [entry["id"] for entry in client.client_list()
                    if entry["cmd"] == "client|list" or entry["cmd"] == "client"]
    redis.Redis.from_url(redis_server.url(0)).client_kill_filter(_id=client_id)
    gevent.sleep(0.05)

    assert client.ping()  # a fresh connection, without an error for the caller
    connections.close()
