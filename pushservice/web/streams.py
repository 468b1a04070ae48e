"""Opening and closing SSE streams: the one place where a connection's life starts and
ends.

Opening takes, in order: the instance's connection budget (MAX_CONNECTIONS), a record in
the registry (written in the background; the registry enforces MAX_CONNECTIONS_PER_USER
across the deployment and closes a stream beyond it), a place in the hub (live entries
from now on), and the event stream that the server iterates. If any step fails, the steps
before it are undone, so a refused or failed open leaves nothing behind. Closing (the
event stream's end, whatever ended it) undoes all of them once.

Nothing here waits for Redis but a resume from further back than the hub's recent
history, and concurrent ones share one look at the stream: a crowd arriving at once is
admitted at the pace of the HTTP stack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..engine.event_stream import EventStream, StreamContext, plan_resume
from ..engine.subscription import Subscription
from ..engine.worker import WorkerEngine
from ..errors import ServiceUnavailableError, StoreUnavailableError
from ..group_commit import CallTimedOutError, GroupCommit
from ..ops.capacity import ConnectionBudget
from ..ops.registry import ConnectionRegistry
from ..store import StreamInfo

# How long a new stream waits for a just-started worker's reader to find its position.
READY_WAIT_SECONDS = 5.0


class Streams:
    """Opens and closes this worker's streams. ``budget`` may be replaced before the
    first stream opens (gunicorn's hook shares one table between the workers)."""

    def __init__(self, engine: WorkerEngine, registry: ConnectionRegistry,
                 budget: ConnectionBudget) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.hub = engine.hub
        self.registry = registry
        self.budget = budget
        self.context = StreamContext(engine.settings, engine.store, engine.stats,
                                     engine.hub.recent, self.close, engine.confirmations)
        # Resumes that arrive together share one look at the stream, taken after they
        # arrived (so that it knows of every id they may hold).
        self._stream_infos = GroupCommit(
            lambda calls, deadline: [engine.store.stream_info()] * len(calls))

    def open(self, topics: Sequence[str], *, kind: str = "stream", user: str | None = None,
             named: bool = True, last_event_id: str | None = None,
             heartbeat_events: bool = False, expires_at: float | None = None,
             client_fd: int | None = None, remote_addr: str | None = None,
             user_agent: str | None = None, queue_size: int | None = None) -> EventStream:
        """A new stream of ``topics``, resuming after ``last_event_id`` (None: live only),
        whose mailbox holds ``queue_size`` frames (default CONNECTION_QUEUE_SIZE).

        Raises ServiceUnavailableError (not ready, the instance full, Redis unavailable
        for a resume that needs it) with nothing left behind; the caller must ``close()``
        the returned stream (a WSGI server does)."""
        if not self.engine.reader.ready.wait(READY_WAIT_SECONDS):
            raise ServiceUnavailableError("The worker is not connected to Redis yet.",
                                          retry_after=2, code="not_ready")
        plan = plan_resume(last_event_id, self.hub.recent, self._stream_info)
        subscription = Subscription(tuple(topics),
                                    queue_size or self.settings.connection_queue_size,
                                    named=named, kind=kind, user=user)
        undo: list[Callable[[], None]] = []
        try:
            if not self.budget.try_acquire():
                raise ServiceUnavailableError(
                    f"This instance holds its maximum of {self.settings.max_connections} "
                    "connections (MAX_CONNECTIONS); retry later or on another instance.",
                    retry_after=5, code="too_many_connections")
            undo.append(self.budget.release)
            self.registry.admit(subscription, remote_addr, user_agent)
            undo.append(lambda: self.registry.remove(subscription))
            start = self.hub.register(subscription)
            undo.append(lambda: self.hub.unregister(subscription))
            if self.engine.confirmations is not None:
                # Timed redeliveries for its user reach it from here on.
                self.engine.confirmations.register(subscription)
                undo.append(lambda: self.engine.confirmations.unregister(subscription))
            return EventStream(self.context, subscription, start, plan,
                               heartbeat_events=heartbeat_events, expires_at=expires_at,
                               client_fd=client_fd)
        except BaseException:
            for step in reversed(undo):
                step()
            raise

    def _stream_info(self) -> StreamInfo:
        try:
            (info,) = self._stream_infos.submit(
                [None], timeout=self.settings.request_timeout_seconds)
        except CallTimedOutError:
            raise StoreUnavailableError("Redis did not answer within REQUEST_TIMEOUT_SECONDS.",
                                        retry_after=2) from None
        return info

    def close(self, stream: EventStream) -> None:
        """``stream`` ended (the event stream calls this once): let its connection go."""
        subscription = stream.subscription
        self.hub.unregister(subscription)
        if self.engine.confirmations is not None:
            self.engine.confirmations.unregister(subscription)
        self.registry.remove(subscription)
        self.budget.release()
