"""Schemathesis hooks for tests/e2e/test_api_fuzzing.py: they run inside the schemathesis
process (SCHEMATHESIS_HOOKS), not in the test process.

Each generated request gets the token of the role its endpoint is for, signed with
FUZZ_JWT_SECRET as a real client's would be:
- publishing: a publisher token for the service the generated message names (so that
  valid messages get through to Redis, rather than all stopping at 403), allowed every
  topic and broadcasts; a body without a usable service gets a publisher token for
  another service, so refusals are exercised too;
- streams, acknowledgements and the cookie endpoint: a subscriber allowed every topic;
- the connection and admin APIs: an admin.
Streams are read for at most STREAM_READ_SECONDS: they never end by themselves.
"""

from __future__ import annotations

import os
import re
import time

import jwt
import schemathesis

SECRET = os.environ["FUZZ_JWT_SECRET"]
STREAM_READ_SECONDS = 0.5
_SERVICE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _token(subject: str, **push: object) -> str:
    now = int(time.time())
    claims = {"sub": subject, "iat": now, "exp": now + 600}
    if push:
        claims["push"] = push
    return jwt.encode(claims, SECRET, algorithm="HS256")


_SUBSCRIBER = _token("fuzz-subscriber", subscribe=["*"])
_ADMIN = _token("fuzz-admin", roles=["admin"])
_PUBLISHERS: dict[str, str] = {}


def _publisher(service: str) -> str:
    token = _PUBLISHERS.get(service)
    if token is None:
        token = _PUBLISHERS[service] = _token(f"fuzz-{service}"[:128], service=service,
                                              publish=["*"], broadcast=True)
    return token


def _service_of(body: object) -> str:
    """The service the generated message (or the batch's first message) names."""
    if isinstance(body, dict) and isinstance(body.get("messages"), list) and body["messages"]:
        body = body["messages"][0]
    elif isinstance(body, list) and body:
        body = body[0]
    service = body.get("service") if isinstance(body, dict) else None
    if isinstance(service, str) and _SERVICE.fullmatch(service):
        return service
    return "fuzz-other-service"


@schemathesis.auth(refresh_interval=None)
class RoleTokens:
    """The token of the role each endpoint is for."""

    def get(self, case, ctx):
        path = case.operation.path
        if path.endswith("/ack"):
            return _SUBSCRIBER  # the user acknowledges
        if path.startswith("/api/v1/messages/"):
            return _publisher(_service_of(case.body))
        if path.startswith(("/api/v1/connections", "/admin/")):
            return _ADMIN
        return _SUBSCRIBER

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path.startswith("/sse/") or case.operation.path == "/admin/events":
        kwargs["timeout"] = STREAM_READ_SECONDS
