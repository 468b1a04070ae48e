"""Free TCP ports on 127.0.0.1."""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and this process has not handed out.

    The kernel picks it; the port is released before returning, so a server started with it
    can still lose a race against another process. Servers that start on it check that they
    bound it and pick another port otherwise.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found on 127.0.0.1")
