"""pushservice-client: publish to pushservice and subscribe to its streams.

    from pushservice_client import PushClient

    with PushClient(service="knowledge-service") as push:
        push.progress({"task_id": "t1"}, 65, "embedding")

PushClient (threads) and AsyncPushClient (asyncio) have the same API: ``send``,
``broadcast``, ``batch``, one helper per message type, ``subscribe``, and the
operations calls ``stats``, ``connections``, ``kick``. Concurrent sends are batched by
themselves; every message carries an idempotency id, so retries are safe.
``verify_webhook`` checks the service's signed expiry notices (delivery confirmation).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .aio import AsyncPushClient
from .client import PushClient
from .config import RetryPolicy
from .errors import (
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    HistoryLostError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PushError,
    RateLimitedError,
    ServiceError,
    TransportError,
    UnavailableError,
)
from .messages import MESSAGE_TYPES, Published, build_message, new_message_id
from .sse import Event
from .subscriber import AsyncSubscription, Subscription
from .webhooks import WebhookVerificationError, verify_webhook, webhook_signature

__all__ = [
    "MESSAGE_TYPES",
    "AsyncPushClient",
    "AsyncSubscription",
    "AuthenticationError",
    "BadRequestError",
    "ClientClosedError",
    "ConfigurationError",
    "Event",
    "HistoryLostError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Published",
    "PushClient",
    "PushError",
    "RateLimitedError",
    "RetryPolicy",
    "ServiceError",
    "Subscription",
    "TransportError",
    "UnavailableError",
    "WebhookVerificationError",
    "__version__",
    "build_message",
    "new_message_id",
    "verify_webhook",
    "webhook_signature",
]
