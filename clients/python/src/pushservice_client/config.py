"""Where the service is, how to authenticate, and how patient to be.

The environment is read here and only here: ``PUSHSERVICE_URL``, ``PUSHSERVICE_TOKEN``
and ``PUSHSERVICE_SERVICE``, each only when the constructor was not given the value.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from .errors import ConfigurationError

DEFAULT_URL = "http://localhost:8089"
# The service's own MAX_BATCH_SIZE default; a smaller service limit is learnt from its
# batch_too_large answer.
MAX_BATCH_SIZE = 1000

TokenSource = str | Callable[[], str | None] | None


def resolve_url(base_url: str | None) -> str:
    """``base_url``, else PUSHSERVICE_URL, else http://localhost:8089; without a trailing
    slash. Raises ConfigurationError for anything but an http(s) URL."""
    url = (base_url or os.environ.get("PUSHSERVICE_URL") or DEFAULT_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(f"not an http(s) URL: {url!r} (base_url or PUSHSERVICE_URL)")
    return url


class Token:
    """The bearer token, from a string, a callable (called for every request, so a
    rotating token is always current) or, when neither is given, PUSHSERVICE_TOKEN.
    An empty or None token sends no Authorization header (a service with
    ENABLE_AUTH=false needs none)."""

    def __init__(self, source: TokenSource = None) -> None:
        if source is None:
            source = os.environ.get("PUSHSERVICE_TOKEN") or None
        self._source = source

    @property
    def rotates(self) -> bool:
        """True when the token comes from a callable that may give a fresh one."""
        return callable(self._source)

    def current(self) -> str | None:
        """The token to send now."""
        source = self._source
        return source() if callable(source) else source

    def headers(self) -> dict[str, str]:
        """``{"Authorization": "Bearer ..."}``, or nothing without a token."""
        token = self.current()
        return {"Authorization": f"Bearer {token}"} if token else {}


def default_service(service: str | None) -> str | None:
    """The service name messages are published as when they do not say:
    ``service``, else PUSHSERVICE_SERVICE, else None (then each message must name it)."""
    return service or os.environ.get("PUSHSERVICE_SERVICE") or None


@dataclass(frozen=True)
class RetryPolicy:
    """How failed publishes are retried.

    Retried: connection errors, timeouts, 503 (and other 5xx) and 429. Never retried:
    other 4xx. Attempt ``n`` (from 0) waits a random time between 0 and
    ``min(max_delay, base_delay * 2**n)`` (full jitter); an answer with Retry-After waits
    at least that long. ``deadline`` bounds the whole publish, attempts and waits
    together (seconds from the call); 0 means a single attempt.
    """

    deadline: float = 30.0
    base_delay: float = 0.05
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.deadline < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("retry deadline and delays must be >= 0")


def make_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """An httpx.Timeout for every request: ``timeout`` seconds for each of connect, read,
    write and pool (default 10); an httpx.Timeout is used as is. None is refused: every
    request is bounded."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if timeout is None or timeout <= 0:
        raise ConfigurationError("timeout must be a positive number of seconds")
    return httpx.Timeout(timeout)


def user_agent() -> str:
    """The User-Agent the client sends."""
    from . import __version__

    return f"pushservice-client/{__version__} httpx/{httpx.__version__}"
