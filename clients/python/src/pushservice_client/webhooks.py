"""Checking pushservice's expiry notices (ACK_WEBHOOK_URL).

When a message published with ``metadata.require_ack: true`` expires before its user
acknowledged it, the service POSTs a notice to ACK_WEBHOOK_URL, signed with the secret
both sides share (ACK_WEBHOOK_SECRET)::

    Pushservice-Timestamp: 1795696500
    Pushservice-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">
    Pushservice-Notice-Id: <the message id>

``verify_webhook`` checks both and returns the notice; anything else raises
WebhookVerificationError (answer it 400: a genuine notice is sent again). A notice may
arrive more than once (it is retried until answered 2xx): use ``Pushservice-Notice-Id``
to act on it once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from .errors import PushError

SIGNATURE_HEADER = "Pushservice-Signature"
TIMESTAMP_HEADER = "Pushservice-Timestamp"
NOTICE_ID_HEADER = "Pushservice-Notice-Id"
# Notices older (or further in the future) than this are refused: a captured notice
# cannot be replayed later.
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(PushError, ValueError):
    """The notice is not genuine, or too old: its signature or timestamp does not check."""


def webhook_signature(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    """The ``Pushservice-Signature`` value the service sends for ``body`` at
    ``timestamp``: ``v1=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_webhook(body: bytes, headers: Mapping[str, str], secret: str | bytes, *,
                   tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
                   now: float | None = None) -> dict[str, Any]:
    """The notice in ``body`` (the request body as received, bytes), once its signature
    and timestamp check out against ``secret``; ``headers`` are the request's headers
    (any mapping; names are matched without regard to case). Raises
    WebhookVerificationError otherwise."""
    found = {name.lower(): value for name, value in headers.items()}
    timestamp = found.get(TIMESTAMP_HEADER.lower(), "")
    signature = found.get(SIGNATURE_HEADER.lower(), "")
    if not timestamp.isdigit():
        raise WebhookVerificationError(f"no {TIMESTAMP_HEADER} header of Unix seconds")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance_seconds:
        raise WebhookVerificationError(
            f"the notice is {abs(now - int(timestamp)):.0f} s from now; at most "
            f"{tolerance_seconds:g} s are accepted")
    expected = webhook_signature(secret, timestamp, body)
    # One of possibly several comma-separated signatures (a secret being rotated).
    offered = [part.strip() for part in signature.split(",")]
    if not any(hmac.compare_digest(expected, part) for part in offered):
        raise WebhookVerificationError("the signature does not match the body")
    try:
        notice = json.loads(body)
    except ValueError as exc:
        raise WebhookVerificationError(f"the body is not JSON: {exc}") from exc
    if not isinstance(notice, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return notice
