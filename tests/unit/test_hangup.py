"""Telling a client's hang-up on a real socket, without reading or writing it."""

from __future__ import annotations

import socket
import struct

import pytest

from pushservice.engine.hangup import client_fd, hung_up


def test_nothing_to_read_is_no_verdict(socket_pair):
    server, _ = socket_pair
    assert hung_up(server.fileno()) is None


def test_a_closed_peer_hung_up(socket_pair):
    server, client = socket_pair
    client.close()
    assert hung_up(server.fileno()) is True


def test_a_reset_peer_hung_up():
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    # SO_LINGER 0: close sends RST instead of FIN.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    try:
        assert hung_up(accepted.fileno()) is True
    finally:
        accepted.close()


def test_bytes_from_the_peer_are_no_hang_up_and_stay_unread(socket_pair):
    server, client = socket_pair
    client.sendall(b"GET / HTTP/1.1\r\n")
    client.close()

    assert hung_up(server.fileno()) is False
    assert server.recv(100) == b"GET / HTTP/1.1\r\n"


def test_the_socket_stays_open_after_a_verdict(socket_pair):
    server, client = socket_pair
    client.close()
    hung_up(server.fileno())
    assert server.fileno() >= 0
    server.getsockname()  # still a valid descriptor


@pytest.mark.parametrize("environ", [
    {},  # not gunicorn
    {"SERVER_PROTOCOL": "HTTP/2", "gunicorn.socket": "x"},
    {"SERVER_PROTOCOL": "HTTP/1.1", "HTTP_VERSION": "2", "gunicorn.socket": "x"},
])
def test_no_descriptor_without_a_connection_of_its_own(environ):
    assert client_fd(environ) is None


def test_the_descriptor_of_an_http_1_request_on_gunicorn(socket_pair):
    server, _ = socket_pair
    environ = {"SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": server}
    assert client_fd(environ) == server.fileno()


def test_a_closed_socket_has_no_descriptor(socket_pair):
    server, _ = socket_pair
    server.close()
    assert client_fd({"SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": server}) is None
