"""One worker's engine, as one object: its settings, counters, message store, hub, reader,
health probe and delivery confirmation. The parts above it (registry, metrics, streams)
take it whole."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings
from ..store import MessageStore
from ..store.acks import AckStore
from .confirmations import Confirmations
from .hub import Hub
from .probe import DeliveryProbe
from .reader import Reader
from .stats import WorkerStats


@dataclass(frozen=True)
class WorkerEngine:
    """The parts every worker runs. Build with ``WorkerEngine.build(settings)``; call
    ``start()`` in the worker process after fork."""

    settings: Settings
    stats: WorkerStats
    store: MessageStore
    hub: Hub
    reader: Reader
    probe: DeliveryProbe
    # None only where an engine is put together by hand without it (tests).
    confirmations: Confirmations | None = None

    @classmethod
    def build(cls, settings: Settings) -> WorkerEngine:
        stats = WorkerStats()
        store = MessageStore(settings, counters=stats)
        hub = Hub(settings, stats)
        reader = Reader(settings, store, hub, stats)
        confirmations = Confirmations(settings, AckStore(settings, store.connections,
                                                         store.keys), stats)
        return cls(settings, stats, store, hub, reader, DeliveryProbe(settings, store, reader),
                   confirmations)

    def start(self) -> None:
        """Start heartbeats, the reader, the health probes and the recording of
        deliveries. Idempotent."""
        self.hub.start()
        self.reader.start()
        self.probe.start()
        if self.confirmations is not None:
            self.confirmations.start()

    def stop(self) -> None:
        if self.confirmations is not None:
            self.confirmations.stop()
        self.probe.stop()
        self.reader.stop()
        self.hub.stop()
