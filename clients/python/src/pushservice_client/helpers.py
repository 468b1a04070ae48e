"""One helper per message type, shared by the sync and the async client.

Each helper builds the envelope and hands it to ``self.send``; on PushClient that
returns a Published, on AsyncPushClient an awaitable of one, so both flavours have
the same helpers with the same signatures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .messages import build_message, helper_data

Target = Mapping[str, Any]


class MessageHelpers:
    """``progress``, ``status``, ``error``, ``success``, ``warning``, ``info`` and
    ``custom``: each sends one message of that type to ``target`` (routing keys such as
    ``{"user_id": "123"}``, ``{"task_id": "t1"}`` or ``{"channel": "news"}``).

    Common keyword arguments: ``data`` (more fields for ``data``; they win over the
    helper's own), ``service`` (default: the client's), ``metadata`` (``priority``,
    ``ttl``, ...), ``source``, ``id`` (your idempotency key; one is generated when
    absent).
    """

    default_service: str | None = None

    def send(self, message: Mapping[str, Any]) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _typed(self, type_: str, target: Target | None, data: dict[str, Any],
               service: str | None, metadata: Mapping[str, Any] | None, source: str | None,
               id: str | None) -> Any:
        message = build_message(type_, target, data, service=service or self.default_service,
                                metadata=metadata, source=source, id=id)
        return self.send(message)

    def progress(self, target: Target, progress: float, message: str | None = None, *,
                 stage: str | None = None, data: Mapping[str, Any] | None = None,
                 service: str | None = None, metadata: Mapping[str, Any] | None = None,
                 source: str | None = None, id: str | None = None) -> Any:
        """Task progress: ``data = {"progress": 0-100, "message": ..., "stage": ...}``."""
        fields = {"progress": progress, "stage": stage}
        return self._typed("progress", target, helper_data(message, fields, data),
                           service, metadata, source, id)

    def status(self, target: Target, status: str, message: str | None = None, *,
               data: Mapping[str, Any] | None = None, service: str | None = None,
               metadata: Mapping[str, Any] | None = None, source: str | None = None,
               id: str | None = None) -> Any:
        """A task's state changed: ``data = {"status": ..., "message": ...}``."""
        return self._typed("status", target, helper_data(message,
                                                         {"status": status}, data),
                           service, metadata, source, id)

    def error(self, target: Target, message: str, *, code: str | None = None,
              data: Mapping[str, Any] | None = None, service: str | None = None,
              metadata: Mapping[str, Any] | None = None, source: str | None = None,
              id: str | None = None) -> Any:
        """A task failed: ``data = {"message": ..., "code": ...}``."""
        return self._typed("error", target, helper_data(message, {"code": code}, data),
                           service, metadata, source, id)

    def success(self, target: Target, result: Any = None, message: str | None = None, *,
                data: Mapping[str, Any] | None = None, service: str | None = None,
                metadata: Mapping[str, Any] | None = None, source: str | None = None,
                id: str | None = None) -> Any:
        """A task finished: ``data = {"result": ..., "message": ...}``."""
        return self._typed("success", target, helper_data(message,
                                                          {"result": result}, data),
                           service, metadata, source, id)

    def warning(self, target: Target, message: str, *, data: Mapping[str, Any] | None = None,
                service: str | None = None, metadata: Mapping[str, Any] | None = None,
                source: str | None = None, id: str | None = None) -> Any:
        """Something to look at: ``data = {"message": ...}``."""
        return self._typed("warning", target, helper_data(message, {}, data),
                           service, metadata, source, id)

    def info(self, target: Target, message: str, *, data: Mapping[str, Any] | None = None,
             service: str | None = None, metadata: Mapping[str, Any] | None = None,
             source: str | None = None, id: str | None = None) -> Any:
        """For information: ``data = {"message": ...}``."""
        return self._typed("info", target, helper_data(message, {}, data),
                           service, metadata, source, id)

    def custom(self, target: Target, data: Mapping[str, Any], *, service: str | None = None,
               metadata: Mapping[str, Any] | None = None, source: str | None = None,
               id: str | None = None) -> Any:
        """Business-specific: ``data`` as given."""
        return self._typed("custom", target, dict(data), service, metadata, source, id)
