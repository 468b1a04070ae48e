"""Log redaction (pushservice.logs): tokens never reach a log line."""

from __future__ import annotations

import datetime
import io
import logging
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from pushservice.logs import ACCESS_LOG_FORMAT, REDACTED, RedactingFilter, RedactingLogger, redact

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjMiLCJleHAiOjE3MDB9"
       ".c2lnbmF0dXJlLXNpZ25hdHVyZQ")


@pytest.mark.parametrize("text, kept", [
    (f"GET /sse/user/1?token={JWT} HTTP/1.1", "GET /sse/user/1?token="),
    (f"/sse/user/1?named=0&token={JWT}&x=1", "&x=1"),
    ("/sse/user/1?token=opaque-not-a-jwt&named=0", "&named=0"),
    ("token=opaque", "token="),
    ("/sse/user/1?TOKEN=opaque", "TOKEN="),
    ("/sse/user/1?t%6Fken=opaque", "t%6Fken="),
    ("/sse/user/1?access_token=opaque", "access_token="),
    ("Bearer opaque-credential", "Bearer "),
    (f"cookie: theme=dark; pushservice_token={JWT}", "theme=dark"),
    (f"Referer: http://app.example/page?x=1&token={JWT}", "x=1&token="),
    (f"error handling {JWT} in a message", "error handling "),
])
def test_redact_removes_tokens_and_keeps_the_rest(text, kept):
    result = redact(text)
    assert JWT not in result and "opaque" not in result
    assert REDACTED in result
    assert kept in result


@pytest.mark.parametrize("text", [
    "GET /sse/user/1?named=0 HTTP/1.1", "mytoken=1", "tokens=3", "plain text", "",
    "/sse/stream/a,b?channel=c",
])
def test_redact_leaves_token_free_text_alone(text):
    assert redact(text) == text


def test_the_filter_redacts_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.logs.redaction")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("request %s failed", f"/sse/user/1?token={JWT}")
        try:
            raise ValueError(f"bad token {JWT}")
        except ValueError:
            logger.exception("while handling Bearer %s", "opaque-credential")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert JWT not in output and "opaque-credential" not in output
    assert "request /sse/user/1?token=[redacted] failed" in output
    assert "ValueError: bad token [redacted]" in output


def _gunicorn_logger(access_log_format: str, errorlog: str = "-") -> RedactingLogger:
    config = Config()
    config.set("accesslog", "-")
    config.set("errorlog", errorlog)
    config.set("access_log_format", access_log_format)
    return RedactingLogger(config)


def test_the_gunicorn_logger_redacts_every_atom(capsys):
    log = _gunicorn_logger(
        '%(h)s "%(r)s" %(q)s %(U)s %({authorization}i)s %({cookie}i)s %(f)s '
        '%({query_string}e)s %(s)s')
    environ = {
        "REQUEST_METHOD": "GET", "RAW_URI": f"/sse/user/1?token={JWT}",
        "PATH_INFO": "/sse/user/1", "QUERY_STRING": f"token={JWT}",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_REFERER": f"http://app.example/?token={JWT}",
    }
    request = SimpleNamespace(headers=[("AUTHORIZATION", f"Bearer {JWT}"),
                                       ("COOKIE", f"pushservice_token={JWT}")])
    response = SimpleNamespace(status="200 OK", headers=[], sent=10)
    log.access(response, request, environ, datetime.timedelta(seconds=0.01))
    line = capsys.readouterr().out
    assert JWT not in line
    assert '"GET /sse/user/1?token=[redacted] HTTP/1.1"' in line
    assert "Bearer [redacted]" in line and "pushservice_token=[redacted]" in line
    assert line.count(REDACTED) == 6


def test_the_services_access_line_is_what_gunicorn_would_write_without_the_token(capsys):
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/sse/user/1?token={JWT}&named=1",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7"}
    request = SimpleNamespace(headers=[("AUTHORIZATION", f"Bearer {JWT}")])
    response = SimpleNamespace(status="200 OK", headers=[], sent=1234)
    took = datetime.timedelta(seconds=1, microseconds=234_567)

    _gunicorn_logger(ACCESS_LOG_FORMAT).access(response, request, environ, took)
    fast = capsys.readouterr().out
    # gunicorn's own formatting of the same format (a copy of it, so the fast path is off)
    _gunicorn_logger(ACCESS_LOG_FORMAT + " ").access(response, request, environ, took)
    general = capsys.readouterr().out

    assert fast.rstrip("\n") == general.rstrip("\n").rstrip()
    assert fast.startswith('10.0.0.7 "GET /sse/user/1?token=[redacted]&named=1 HTTP/1.1" 200 '
                           '1234 1234ms pid=<')
    assert JWT not in fast


def test_the_gunicorn_error_log_is_redacted(capsys):
    log = _gunicorn_logger("%(r)s")
    log.error("Error handling request %s", f"/sse/user/1?token={JWT}")
    output = capsys.readouterr().err
    assert JWT not in output and "/sse/user/1?token=[redacted]" in output


@pytest.mark.parametrize("query", [
    "token%00=s3cr3t-opaque", "tok3n=s3cr3t-opaque", "%74oken=s3cr3t-opaque",
    "Token=s3cr3t-opaque", "auth=s3cr3t-opaque", "s3cr3t-opaque", "key=s3cr3t-opaque",
    "token =s3cr3t-opaque", "x=1&secret=s3cr3t-opaque", "channel=a;password=s3cr3t-opaque",
])
def test_no_parameter_spelling_gets_a_credential_into_the_access_log(capsys, query):
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/sse/user/1?{query}",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7"}
    request = SimpleNamespace(headers=[])
    response = SimpleNamespace(status="200 OK", headers=[], sent=10)
    took = datetime.timedelta(milliseconds=3)

    for log_format in (ACCESS_LOG_FORMAT, '%(h)s "%(r)s" %(q)s'):
        _gunicorn_logger(log_format).access(response, request, environ, took)
        line = capsys.readouterr().out
        assert "s3cr3t" not in line and "[redacted]" in line, line


def test_the_services_own_parameters_are_logged_as_sent(capsys):
    environ = {"REQUEST_METHOD": "GET",
               "RAW_URI": "/sse/stream/a?channel=b&last_event_id=ep-1-0&named=0",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7"}
    _gunicorn_logger(ACCESS_LOG_FORMAT).access(
        SimpleNamespace(status="200 OK", headers=[], sent=10), SimpleNamespace(headers=[]),
        environ, datetime.timedelta(milliseconds=3))
    assert "channel=b&last_event_id=ep-1-0&named=0" in capsys.readouterr().out
