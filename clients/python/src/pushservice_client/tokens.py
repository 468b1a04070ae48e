"""Development tokens: HS256 JWTs signed with JWT_SECRET, using only the standard library.

The claims are the ones the service reads (README, "Security"): ``sub``, ``iat``,
``exp`` and a ``push`` claim whose members (``subscribe``, ``service``, ``publish``,
``broadcast``, ``roles``) are included only when they grant something. For
production tokens use your identity provider; these are for development and tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

# The service refuses shorter HS256 secrets.
MIN_SECRET_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def build_claims(subject: str, *, service: str | None = None,
                 subscribe: Sequence[str] = (), publish: Sequence[str] = (),
                 broadcast: bool = False, roles: Sequence[str] = (),
                 ttl_seconds: float = 3600, issuer: str | None = None,
                 audience: str | None = None, now: float | None = None) -> dict[str, Any]:
    """The claims of a token for ``subject`` valid ``ttl_seconds`` from ``now``."""
    now = time.time() if now is None else now
    claims: dict[str, Any] = {"sub": subject, "iat": int(now), "exp": int(now + ttl_seconds)}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    push: dict[str, Any] = {}
    if subscribe:
        push["subscribe"] = list(subscribe)
    if service:
        push["service"] = service
    if publish:
        push["publish"] = list(publish)
    if broadcast:
        push["broadcast"] = True
    if roles:
        push["roles"] = list(roles)
    if push:
        claims["push"] = push
    return claims


def mint_hs256(claims: Mapping[str, Any], secret: str | bytes) -> str:
    """Sign ``claims`` as an HS256 JWT. Raises ValueError for a secret under 32 bytes
    (the service would refuse to run with it, so its tokens would never verify)."""
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                         "(e.g. openssl rand -hex 32)")
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(dict(claims), separators=(",", ":"),
                              ensure_ascii=False).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def decode_unverified(token: str) -> dict[str, Any]:
    """The claims of a JWT, without checking its signature (for display only)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
