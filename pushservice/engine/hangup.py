"""Noticing at once that a client hung up on its stream.

An idle stream writes only a heartbeat every HEARTBEAT_INTERVAL seconds, and the first
write to a socket the peer closed still succeeds: without help a closed browser tab would
hold its connection slot, its registry entry and its per-user allowance for up to two
intervals. After its request an SSE client sends nothing, so its socket turning readable
means end of stream (or a reset). The stream session watches its client's socket with one
libev watcher, no greenlet (see ``StreamSession``); this module answers the two questions
that needs.

Like nginx, a client that half-closes (shuts down only its sending side) is taken as gone.
"""

from __future__ import annotations

import _socket  # the unpatched socket type: a peek must never wait
import socket
from typing import Any

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def client_fd(environ: dict[str, Any]) -> int | None:
    """The file descriptor of the request's own connection, when it has one to itself:
    an HTTP/1.x request under gunicorn. None elsewhere (HTTP/2 shares its socket among
    streams; other servers do not expose it); those streams notice at their next write."""
    sock = environ.get("gunicorn.socket")
    if sock is None or environ.get("SERVER_PROTOCOL") not in ("HTTP/1.0", "HTTP/1.1") \
            or environ.get("HTTP_VERSION") == "2":
        return None
    try:
        fd = sock.fileno()
    except OSError:
        return None
    return fd if fd >= 0 else None


def hung_up(fd: int) -> bool | None:
    """Called when ``fd`` turned readable: True when the peer closed or reset the
    connection, False when it sent bytes (left unread), None for a spurious wake-up."""
    try:
        waiting = peek(fd)
    except OSError:
        return True  # reset by the peer
    return None if waiting is None else not waiting


def peek(fd: int) -> bytes | None:
    """The first byte waiting on ``fd``, left unread: b"" when the peer closed, None when
    nothing waits. Raises OSError when the connection was reset. Never waits."""
    peer = _socket.socket(fileno=fd)  # borrowed: detached below, never closed
    try:
        return peer.recv(1, _PEEK)
    except BlockingIOError:
        return None
    finally:
        peer.detach()
