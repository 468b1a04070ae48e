"""Bounded waiting: every wait in the suite polls against a deadline instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """A condition did not come true before its deadline.

    An AssertionError so that pytest reports it as a plain test failure.
    """


class Deadline:
    """A point in time ``seconds`` from now, measured on the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return time.monotonic() >= self._end


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Call ``probe`` until it returns a truthy value and return that value.

    Exceptions raised by ``probe`` count as "not yet" and the last one is chained to the
    error. Raises WaitTimeoutError after ``timeout`` seconds; ``message`` (a string or a
    callable that builds one, for state that is only worth formatting on failure) says
    what was awaited. ``interval`` is the pause between calls, not a synchronisation.
    """
    deadline = Deadline(timeout)
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means "not yet"
            last_error = exc
        else:
            if value:
                return value
        if deadline.expired():
            text = message() if callable(message) else message
            raise WaitTimeoutError(
                f"timed out after {timeout:g}s waiting for {text}"
            ) from last_error
        time.sleep(min(interval, deadline.remaining()))
