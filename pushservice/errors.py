"""The error hierarchy and the handlers that render every error as one JSON shape.

Every error body is ``{"error": {"code": ..., "message": ..., "details": ...}}``, also for
Flask's own HTTP errors and for unexpected exceptions (logged, answered with a generic 500).
"""

from __future__ import annotations

import logging
import math
from typing import Any

log = logging.getLogger(__name__)


class SettingsError(Exception):
    """The environment holds invalid settings; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid settings:\n  " + "\n  ".join(self.problems))


class PushServiceError(Exception):
    """Base of every error the service answers with; owns its status and code."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Extra response headers this error requires."""
        return {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequestError(PushServiceError):
    status = 400
    code = "bad_request"


class ValidationError(BadRequestError):
    """A message or request failed validation; ``details`` says where and why."""

    code = "validation_failed"


class UnauthorizedError(PushServiceError):
    """No usable credentials. ``error`` is the RFC 6750 error for WWW-Authenticate:
    "invalid_token" by default, None when the request carried no token at all."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, details: Any = None, code: str | None = None,
                 error: str | None = "invalid_token") -> None:
        super().__init__(message, details, code)
        self.error = error

    def headers(self) -> dict[str, str]:
        if self.error is None:
            return {"WWW-Authenticate": 'Bearer realm="pushservice"'}
        return {"WWW-Authenticate": f'Bearer realm="pushservice", error="{self.error}"'}


class ForbiddenError(PushServiceError):
    status = 403
    code = "forbidden"


class NotFoundError(PushServiceError):
    status = 404
    code = "not_found"


class MethodNotAllowedError(PushServiceError):
    status = 405
    code = "method_not_allowed"


class ConflictError(PushServiceError):
    """The request collides with something that exists (e.g. a message id in use)."""

    status = 409
    code = "conflict"


class PayloadTooLargeError(PushServiceError):
    status = 413
    code = "payload_too_large"


class RequestTimeoutError(PushServiceError):
    """The client did not send its request body in time."""

    status = 408
    code = "request_timeout"


class UnsupportedMediaTypeError(PushServiceError):
    status = 415
    code = "unsupported_media_type"


class RetryLaterError(PushServiceError):
    """An error that tells the client when to try again (``Retry-After``, seconds)."""

    def __init__(self, message: str, retry_after: float = 1, details: Any = None,
                 code: str | None = None) -> None:
        super().__init__(message, details, code)
        self.retry_after = max(1, math.ceil(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyRequestsError(RetryLaterError):
    status = 429
    code = "too_many_requests"


class ServiceUnavailableError(RetryLaterError):
    status = 503
    code = "service_unavailable"


class StoreUnavailableError(ServiceUnavailableError):
    """Redis could not be reached or did not answer in time."""

    code = "redis_unavailable"


# Flask/werkzeug HTTP errors mapped onto our codes, so their bodies share our shape.
_HTTP_CODES = {error.status: error.code for error in (
    BadRequestError, UnauthorizedError, ForbiddenError, NotFoundError, MethodNotAllowedError,
    PayloadTooLargeError, UnsupportedMediaTypeError, TooManyRequestsError)}


def register_error_handlers(app) -> None:
    """Render every error raised under ``app`` as the JSON error shape."""
    from flask import jsonify
    from werkzeug.exceptions import HTTPException

    def render(status: int, body: dict[str, Any], headers: dict[str, str]):
        response = jsonify(body)
        response.status_code = status
        for name, value in headers.items():
            response.headers[name] = value
        return response

    @app.errorhandler(PushServiceError)
    def handle_service_error(error: PushServiceError):
        if error.status >= 500:
            log.warning("%s: %s", error.code, error.message)
        return render(error.status, error.body(), error.headers())

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException):
        status = error.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        headers = {}
        valid_methods = getattr(error, "valid_methods", None)
        if status == 405 and valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        body = PushServiceError(error.description or error.name, code=code).body()
        return render(status, body, headers)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        log.exception("unhandled error")
        body = PushServiceError("The service hit an unexpected error.",
                                code="internal_error").body()
        return render(500, body, {})
