"""Noticing a client's hang-up on a real socket pair, without writing to it."""

from __future__ import annotations

import socket
import struct

import gevent
import pytest

from pushservice.hangup import HangupWatch


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def _watch(server: socket.socket) -> tuple[HangupWatch, list[str]]:
    calls: list[str] = []
    return HangupWatch(server.fileno(), lambda: calls.append("gone")), calls


def test_a_closed_peer_is_noticed_at_once(pair):
    server, client = pair
    watch, calls = _watch(server)
    gevent.sleep(0.05)
    assert calls == []

    client.close()
    gevent.sleep(0.05)

    assert calls == ["gone"]
    watch.stop()


def test_a_reset_peer_is_noticed():
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    watch, calls = _watch(accepted)
    # SO_LINGER 0: close sends RST instead of FIN.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    gevent.sleep(0.05)

    assert calls == ["gone"]
    watch.stop()
    accepted.close()


def test_bytes_from_the_client_are_not_a_hang_up_and_stay_unread(pair):
    server, client = pair
    watch, calls = _watch(server)
    client.sendall(b"GET / HTTP/1.1\r\n")
    gevent.sleep(0.05)
    client.close()
    gevent.sleep(0.05)

    assert calls == []  # it stopped watching rather than spin on unread bytes
    assert server.recv(100) == b"GET / HTTP/1.1\r\n"
    watch.stop()


def test_a_stopped_watch_never_fires(pair):
    server, client = pair
    watch, calls = _watch(server)
    watch.stop()
    watch.stop()  # idempotent
    client.close()
    gevent.sleep(0.05)

    assert calls == []


def test_a_failing_callback_does_not_escape_into_the_event_loop(pair, caplog):
    server, client = pair

    def explode() -> None:
        raise RuntimeError("boom")

    watch = HangupWatch(server.fileno(), explode)
    client.close()
    gevent.sleep(0.05)

    assert "hang-up failed" in caplog.text
    watch.stop()


@pytest.mark.parametrize("environ", [
    {},  # not gunicorn
    {"SERVER_PROTOCOL": "HTTP/2", "gunicorn.socket": "x"},
    {"SERVER_PROTOCOL": "HTTP/1.1", "HTTP_VERSION": "2", "gunicorn.socket": "x"},
])
def test_no_watch_without_a_connection_of_its_own(environ):
    assert HangupWatch.for_request(environ, lambda: None) is None


def test_a_watch_for_an_http_1_request_on_gunicorn(pair):
    server, client = pair
    calls: list[str] = []
    watch = HangupWatch.for_request({"SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": server},
                                    lambda: calls.append("gone"))
    assert watch is not None
    client.close()
    gevent.sleep(0.05)
    assert calls == ["gone"]
    watch.stop()


def test_a_closed_socket_gets_no_watch(pair):
    server, _ = pair
    server.close()
    assert HangupWatch.for_request({"SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": server},
                                   lambda: None) is None
