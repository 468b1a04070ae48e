"""The error hierarchy: each error owns its status, code and headers; every error body,
also Flask's own and unexpected ones, has the shape {"error": {code, message, details}}."""

from __future__ import annotations

import logging

import pytest
from flask import Flask, abort

from pushservice.errors import (
    BadRequestError,
    ForbiddenError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    PushServiceError,
    ServiceUnavailableError,
    SettingsError,
    StoreUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationError,
    register_error_handlers,
)


@pytest.mark.parametrize("error_class, status, code", [
    (PushServiceError, 500, "internal_error"),
    (BadRequestError, 400, "bad_request"),
    (ValidationError, 400, "validation_failed"),
    (UnauthorizedError, 401, "unauthorized"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (MethodNotAllowedError, 405, "method_not_allowed"),
    (PayloadTooLargeError, 413, "payload_too_large"),
    (UnsupportedMediaTypeError, 415, "unsupported_media_type"),
    (TooManyRequestsError, 429, "too_many_requests"),
    (ServiceUnavailableError, 503, "service_unavailable"),
    (StoreUnavailableError, 503, "redis_unavailable"),
])
def test_each_error_owns_its_status_and_code(error_class, status, code):
    error = error_class("it went wrong", details={"field": "x"})

    assert error.status == status
    assert error.code == code
    assert isinstance(error, PushServiceError)
    assert error.body() == {"error": {"code": code, "message": "it went wrong",
                                      "details": {"field": "x"}}}


def test_a_code_can_be_narrowed_per_instance_without_changing_the_class():
    error = BadRequestError("bad json", code="invalid_json")

    assert error.code == "invalid_json"
    assert BadRequestError("other").code == "bad_request"


def test_validation_error_is_a_bad_request():
    assert issubclass(ValidationError, BadRequestError)
    assert issubclass(StoreUnavailableError, ServiceUnavailableError)


def test_unauthorized_names_the_bearer_scheme():
    assert UnauthorizedError("no token").headers() == {
        "WWW-Authenticate": 'Bearer realm="pushservice", error="invalid_token"'}
    assert UnauthorizedError("no token", error="expired").headers()["WWW-Authenticate"] == (
        'Bearer realm="pushservice", error="expired"')


@pytest.mark.parametrize("retry_after, header", [
    (0, "1"), (0.2, "1"), (1, "1"), (1.2, "2"), (2, "2"), (2.5, "3"), (30, "30"),
])
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(retry_after, header):
    assert ServiceUnavailableError("busy", retry_after=retry_after).headers() == {
        "Retry-After": header}
    assert TooManyRequestsError("slow down", retry_after=retry_after).headers() == {
        "Retry-After": header}


def test_errors_without_required_headers_add_none():
    assert BadRequestError("x").headers() == {}
    assert PayloadTooLargeError("x").headers() == {}


def test_settings_error_lists_each_problem():
    error = SettingsError(["A=1: expected x", "B=2: expected y"])

    assert error.problems == ["A=1: expected x", "B=2: expected y"]
    assert str(error) == "invalid settings:\n  A=1: expected x\n  B=2: expected y"


# -- the handlers ------------------------------------------------------------------------


@pytest.fixture
def client():
    app = Flask(__name__)
    register_error_handlers(app)

    @app.get("/raise/<kind>")
    def raise_(kind):
        if kind == "validation":
            raise ValidationError("The message is invalid.",
                                  details=[{"field": "type", "error": "required"}])
        if kind == "unavailable":
            raise StoreUnavailableError("Redis is unavailable", retry_after=2)
        if kind == "unauthorized":
            raise UnauthorizedError("Missing token.")
        if kind == "abort":
            abort(403)
        raise RuntimeError("secret internals")

    @app.post("/only-post")
    def only_post():
        return "ok"

    return app.test_client()


def assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def test_service_error_is_rendered_with_its_details(client):
    error = assert_error_shape(client.get("/raise/validation"), 400, "validation_failed")

    assert error["details"] == [{"field": "type", "error": "required"}]


def test_unavailable_answer_carries_retry_after(client):
    response = client.get("/raise/unavailable")

    assert_error_shape(response, 503, "redis_unavailable")
    assert response.headers["Retry-After"] == "2"


def test_unauthorized_answer_carries_www_authenticate(client):
    response = client.get("/raise/unauthorized")

    assert_error_shape(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_flask_not_found_has_the_same_shape(client):
    error = assert_error_shape(client.get("/nowhere"), 404, "not_found")

    assert error["details"] is None


def test_flask_method_not_allowed_has_the_same_shape_and_allow(client):
    response = client.get("/only-post")

    assert_error_shape(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_flask_abort_has_the_same_shape(client):
    assert_error_shape(client.get("/raise/abort"), 403, "forbidden")


def test_unexpected_exception_is_logged_and_answered_generically(client, caplog):
    with caplog.at_level(logging.ERROR, logger="pushservice.errors"):
        response = client.get("/raise/crash")

    error = assert_error_shape(response, 500, "internal_error")
    assert "secret internals" not in response.get_data(as_text=True)
    assert error["message"] == "The service hit an unexpected error."
    (record,) = [r for r in caplog.records if r.name == "pushservice.errors"]
    assert record.exc_info is not None
