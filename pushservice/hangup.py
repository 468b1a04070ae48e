"""Noticing at once that a client hung up on its stream.

An idle stream writes only a heartbeat every HEARTBEAT_INTERVAL seconds, and the first
write to a socket the peer closed still succeeds: without help a closed browser tab would
hold its connection slot, its registry entry and its per-user allowance for up to two
intervals. After its request an SSE client sends nothing, so its socket turning readable
means end of stream (or a reset): one libev watcher per connection, no greenlet.

Like nginx, a client that half-closes (shuts down only its sending side) is taken as gone.
"""

from __future__ import annotations

import _socket  # the unpatched socket type: a peek must never wait
import logging
import socket
from collections.abc import Callable
from typing import Any

import gevent

log = logging.getLogger(__name__)

_READ = 1  # libev's EV_READ
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class HangupWatch:
    """Calls ``on_hangup`` (in the event loop: it must not block) once the peer of
    ``fd`` closes or resets the connection. ``stop()`` before the socket is closed."""

    __slots__ = ("_fd", "_on_hangup", "_watcher")

    def __init__(self, fd: int, on_hangup: Callable[[], None]) -> None:
        self._fd = fd
        self._on_hangup = on_hangup
        self._watcher = gevent.get_hub().loop.io(fd, _READ)
        self._watcher.start(self._readable)

    @classmethod
    def for_request(cls, environ: dict[str, Any],
                    on_hangup: Callable[[], None]) -> HangupWatch | None:
        """A watch on the request's own connection, when it has one to itself: an
        HTTP/1.x request under gunicorn. None elsewhere (HTTP/2 shares its socket among
        streams; other servers do not expose it); those streams notice at their next
        write."""
        sock = environ.get("gunicorn.socket")
        if sock is None or environ.get("SERVER_PROTOCOL") not in ("HTTP/1.0", "HTTP/1.1") \
                or environ.get("HTTP_VERSION") == "2":
            return None
        try:
            fd = sock.fileno()
        except OSError:
            return None
        if fd < 0:
            return None
        return cls(fd, on_hangup)

    def _readable(self) -> None:
        peer = _socket.socket(fileno=self._fd)  # borrowed: detached below, never closed
        try:
            pending = peer.recv(1, _PEEK)
        except BlockingIOError:
            return  # a spurious wake-up: keep watching
        except OSError:
            pending = b""  # reset by the peer
        finally:
            peer.detach()
        # Either way stop: the watch is level-triggered, and bytes a client sends after
        # its request (TLS records, a pipelined request) stay unread.
        self.stop()
        if not pending:
            try:
                self._on_hangup()
            except Exception:  # never let it escape into the event loop
                log.exception("handling a client hang-up failed")

    def stop(self) -> None:
        """Stop watching. Idempotent."""
        watcher = self._watcher
        if watcher is not None:
            self._watcher = None
            watcher.stop()
            watcher.close()
