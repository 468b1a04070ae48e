"""The gunicorn worker: gunicorn's gevent worker, with a new connection given
REQUEST_TIMEOUT_SECONDS to send its first request instead of the keep-alive timeout.

gunicorn reads every request of a connection, the first included, under its keep-alive
timeout (2 s here, short so that idle connections do not hold up a stopping worker). When
a crowd reconnects at once, a busy worker may get to a new connection's request only
seconds after it arrived: the timeout then fires first, and gunicorn closes a socket
holding an unread request, which the client sees as a reset (not an HTTP refusal it could
follow). A request already waiting is read at once; otherwise the connection waits for it
as long as a request body may take to arrive (REQUEST_TIMEOUT_SECONDS; then it is closed),
as nginx's ``client_header_timeout`` is longer than its keep-alive timeout.
"""

from __future__ import annotations

from gevent.socket import wait_read
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

from .engine.hangup import peek
from .settings import Settings


class PushWorker(GeventWorker):
    """gunicorn's gevent worker; only a new connection's wait for its request differs."""

    def init_process(self) -> None:
        self.first_request_seconds = Settings.from_env().request_timeout_seconds
        super().init_process()

    def handle(self, listener, client, addr) -> None:
        if not request_waiting(client.fileno()):
            try:
                wait_read(client.fileno(), self.first_request_seconds)
            except OSError:  # nothing came in time, or the socket is gone
                util.close(client)
                return
        super().handle(listener, client, addr)


def request_waiting(fd: int) -> bool:
    """Whether bytes (or the peer's end of stream) wait to be read on ``fd``."""
    try:
        return peek(fd) is not None
    except OSError:
        return True  # reset: let gunicorn's own reading meet it
