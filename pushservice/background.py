"""Background loops that never die: one helper and one backoff policy for all of them.

Every worker runs a few loops beside its connections (the reader, heartbeats, registry
renewal, the control channel, instance registration, the metrics flusher). Each is a
``step`` called again and again in its own greenlet. A failing step is retried after a
full-jitter exponential backoff (redis-py's ``FullJitterBackoff``), capped at
``RETRY_CAP_SECONDS`` so that a loop notices within about a second that Redis is back;
the first failure of a run is logged as a warning, unexpected errors with their
traceback, and only ``GreenletExit`` (stopping the loop) ends it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
from redis.backoff import FullJitterBackoff

from .errors import StoreUnavailableError

log = logging.getLogger(__name__)

RETRY_BASE_SECONDS = 0.05
RETRY_CAP_SECONDS = 1.0

# gevent.sleep() this long resumes on the event loop's next turn, after it has polled
# for I/O and run what that woke; gevent.sleep(0) resumes before the poll.
ONE_TURN_SECONDS = 1e-6


def retry_backoff(base: float = RETRY_BASE_SECONDS,
                  cap: float = RETRY_CAP_SECONDS) -> FullJitterBackoff:
    """The backoff policy: after ``n`` failures, wait uniformly between 0 and
    ``min(cap, base * 2**n)`` seconds."""
    return FullJitterBackoff(cap=cap, base=base)


def forever(step: Callable[[], float | None], *, name: str,
            on_failure: Callable[[Exception], None] | None = None,
            backoff: FullJitterBackoff | None = None) -> None:
    """Call ``step`` for ever. It returns the pause before its next call (None or 0: call
    again after one turn of the event loop: a step whose Redis replies are already
    waiting, as from a Redis on the same host, would otherwise never let the streams it
    woke write). After a failure ``on_failure(error)`` runs (to reset a connection,
    say), then the loop waits out the backoff and calls ``step`` again."""
    backoff = backoff or retry_backoff()
    failures = 0
    while True:
        try:
            pause = step()
        except gevent.GreenletExit:
            raise
        except StoreUnavailableError as exc:
            if failures == 0:
                log.warning("%s: %s; retrying", name, exc)
            else:
                log.debug("%s: %s; retrying", name, exc)
            error: Exception = exc
        except Exception as exc:
            log.exception("%s failed; retrying", name)
            error = exc
        else:
            if failures:
                log.info("%s: working again", name)
            failures = 0
            gevent.sleep(pause or ONE_TURN_SECONDS)
            continue
        if on_failure is not None:
            try:
                on_failure(error)
            except Exception:
                log.exception("%s: cleaning up after a failure failed", name)
        gevent.sleep(backoff.compute(failures))
        failures += 1


def spawn_forever(step: Callable[[], float | None], *, name: str,
                  on_failure: Callable[[Exception], None] | None = None,
                  backoff: FullJitterBackoff | None = None) -> gevent.Greenlet:
    """``forever(step, ...)`` in a new greenlet."""
    return gevent.spawn(forever, step, name=name, on_failure=on_failure, backoff=backoff)


class Loop:
    """One background loop of a component: ``start()`` spawns ``forever(step, ...)``
    once, ``stop()`` ends it (waiting up to two seconds)."""

    def __init__(self, step: Callable[[], float | None], name: str,
                 on_failure: Callable[[Exception], None] | None = None) -> None:
        self._step = step
        self.name = name
        self._on_failure = on_failure
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> bool:
        """Start the loop; False when it was running already."""
        if self._greenlet is not None:
            return False
        self._greenlet = spawn_forever(self._step, name=self.name,
                                       on_failure=self._on_failure)
        return True

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
            self._greenlet = None

    @property
    def alive(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead
