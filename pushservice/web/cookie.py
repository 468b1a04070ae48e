"""The auth cookie: a browser trades its bearer token for an HttpOnly cookie that its
EventSource then sends by itself (``new EventSource(url, {withCredentials: true})``).

The cookie holds the same token, lives until the token expires, is unreadable from
JavaScript and goes only where it is read: the streams (``/sse/``) and acknowledgements
(``/api/v1/messages/``; they must be JSON, which no cross-site form can send, so another
site cannot acknowledge with it). One cookie per path, so that it reaches nothing else. Over HTTPS it is ``Secure; SameSite=None`` (so a page on
another site listed in CORS_ORIGINS can use it); over plain HTTP ``SameSite=Lax``.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, request

from ..auth import authenticate, token_from_request
from .extension import push_service

bp = Blueprint("cookie", __name__, url_prefix="/api/v1/auth")

# Streams, and acknowledgements of what they delivered (the publish endpoints under the
# second path read no cookie).
COOKIE_PATHS = ("/sse/", "/api/v1/messages/")
# Browsers keep a cookie 400 days at most; a longer-lived token gets that.
MAX_COOKIE_SECONDS = 400 * 24 * 3600


@bp.post("/cookie")
def set_cookie():
    """Set the auth cookie to the request's bearer token (401 when it does not verify)."""
    principal = authenticate()
    service = push_service()
    response = Response(status=204)
    if principal.expires_at is None:  # authentication is disabled: nothing to keep
        return response
    token = token_from_request()
    lifetime = min(max(0, int(principal.expires_at - time.time())), MAX_COOKIE_SECONDS)
    for path in COOKIE_PATHS:
        response.set_cookie(service.auth.cookie_name, token or "", **_cookie_options(path),
                            max_age=lifetime)
    return response


@bp.delete("/cookie")
def clear_cookie():
    """Remove the auth cookie (sign-out). Needs no token."""
    response = Response(status=204)
    for path in COOKIE_PATHS:
        response.delete_cookie(push_service().auth.cookie_name, **_cookie_options(path))
    return response


def _cookie_options(path: str) -> dict[str, Any]:
    """Where the cookie goes and who may read it: the same when set and when removed.
    Cross-site (``SameSite=None``) only over HTTPS, where browsers allow it."""
    secure = request.is_secure
    return {"path": path, "httponly": True, "secure": secure,
            "samesite": "None" if secure else "Lax"}
