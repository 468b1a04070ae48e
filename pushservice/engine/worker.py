"""One worker's engine, as one object: its settings, counters, message store, hub, reader
and health probe. The parts above it (registry, metrics, streams) take it whole."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings
from ..store import MessageStore
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

    @classmethod
    def build(cls, settings: Settings) -> WorkerEngine:
        stats = WorkerStats()
        store = MessageStore(settings)
        hub = Hub(settings, stats)
        reader = Reader(settings, store, hub, stats)
        return cls(settings, stats, store, hub, reader, DeliveryProbe(settings, store, reader))

    def start(self) -> None:
        """Start heartbeats, the reader and the health probes. Idempotent."""
        self.hub.start()
        self.reader.start()
        self.probe.start()

    def stop(self) -> None:
        self.probe.stop()
        self.reader.stop()
        self.hub.stop()
