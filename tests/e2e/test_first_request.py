"""A new connection's first request may arrive late (a crowd reconnecting at once keeps
the worker busy, or the client is slow): gunicorn's short keep-alive timeout must not
close the socket under it, which the client would see as a reset it cannot follow. The
real service (gunicorn, gevent worker, real Redis) with REQUEST_TIMEOUT_SECONDS=4 and
gunicorn's keep-alive timeout of 2 s."""

from __future__ import annotations

import socket
import time

import pytest

REQUEST_TIMEOUT_S = 4.0
KEEPALIVE_S = 2.0  # gunicorn.conf.py
MARGIN_S = 1.5  # a loaded machine's slack on top of a deadline
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def target(service):
    return service(REQUEST_TIMEOUT_SECONDS=str(REQUEST_TIMEOUT_S))


def _read_answer(sock: socket.socket) -> bytes:
    """One whole answer (head and its Content-Length of body)."""
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            if len(body) >= length:
                return data
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _closed_after(sock: socket.socket, started: float) -> float:
    """Seconds from ``started`` until the server closed ``sock`` (it sends nothing)."""
    try:
        assert sock.recv(1) == b""
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_a_first_request_later_than_the_keepalive_timeout_is_answered(target):
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
        time.sleep(KEEPALIVE_S + 0.8)
        sock.sendall(HEALTH)
        answer = _read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_a_connection_that_never_asks_is_closed_after_the_request_timeout(target):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", target.port), timeout=15) as sock:
        took = _closed_after(sock, started)
    assert REQUEST_TIMEOUT_S - 0.1 <= took <= REQUEST_TIMEOUT_S + MARGIN_S


def test_an_idle_keepalive_connection_still_closes_after_the_keepalive_timeout(target):
    with socket.create_connection(("127.0.0.1", target.port), timeout=15) as sock:
        sock.sendall(HEALTH)
        assert _read_answer(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        took = _closed_after(sock, started)
    assert took <= KEEPALIVE_S + MARGIN_S
