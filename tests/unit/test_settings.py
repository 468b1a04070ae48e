"""Settings.from_env: the documented defaults, every variable parsed, all problems reported at once."""

from __future__ import annotations

import dataclasses

import pytest
from redis.connection import parse_url

from pushservice.errors import SettingsError
from pushservice.settings import Settings

# Authentication is on by default, and the service refuses to start without a strong
# secret: tests about other settings give it one.
SECRET = "0123456789abcdef0123456789abcdef-settings"


def from_env(env: dict[str, str]) -> Settings:
    """Settings.from_env with a strong JWT_SECRET unless ``env`` sets its own."""
    return Settings.from_env({"JWT_SECRET": SECRET, **env})


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        from_env(env)
    return caught.value.problems


def test_defaults_match_the_specification():
    settings = from_env({})

    assert settings.redis_url == "redis://localhost:6379/2"
    assert settings.redis_configured is False
    assert settings.service_port == 8089
    assert settings.max_connections == 10000
    assert settings.heartbeat_interval == 30
    assert settings.message_ttl == 3600
    assert settings.cors_origins == ("http://localhost:3000",)
    assert Settings().jwt_secret == ""
    assert settings.enable_auth is True


def test_defaults_of_the_other_settings():
    settings = from_env({})

    assert settings.workers >= 1
    assert settings.stream_key_prefix == "pushservice"
    assert settings.connection_queue_size == 1000
    assert settings.max_message_bytes == 64 * 1024
    assert settings.max_request_bytes == 8 * 1024 * 1024
    assert settings.max_batch_size == 1000
    assert settings.replay_max_messages == 10_000
    assert settings.sse_retry_ms == 3000
    assert settings.log_level == "info"
    assert settings.embedded_redis_dir == "var/redis"


# Defaults that depend on the machine (core count, host name).
MACHINE_DEPENDENT = {"workers", "instance_name"}


def test_from_env_defaults_equal_the_dataclass_defaults():
    parsed = dataclasses.asdict(from_env({}))
    plain = dataclasses.asdict(Settings(jwt_secret=SECRET))
    for name in MACHINE_DEPENDENT:
        parsed.pop(name, None)
        plain.pop(name, None)

    assert parsed == plain


def test_every_variable_is_parsed():
    env = {
        "REDIS_URL": "redis://cache.internal:6380/5",
        "SERVICE_PORT": "9000",
        "INSTANCE_NAME": "push-a.1",
        "WORKERS": "4",
        "MAX_CONNECTIONS": "500",
        "HEARTBEAT_INTERVAL": "2.5",
        "MESSAGE_TTL": "60",
        "CORS_ORIGINS": '["https://app.example.com"]',
        "JWT_SECRET": "s3cret",
        "ENABLE_AUTH": "false",
        "STREAM_KEY_PREFIX": "push-test.1",
        "STREAM_MAX_LENGTH": "5000",
        "CONNECTION_QUEUE_SIZE": "50",
        "MAX_MESSAGE_BYTES": "2048",
        "MAX_REQUEST_BYTES": "4096",
        "MAX_BATCH_SIZE": "10",
        "REPLAY_MAX_MESSAGES": "20",
        "WRITE_TIMEOUT_SECONDS": "1.5",
        "SHUTDOWN_GRACE_SECONDS": "3",
        "SSE_RETRY_MS": "250",
        "READER_BLOCK_MS": "100",
        "READER_BATCH_SIZE": "64",
        "LOG_LEVEL": "DEBUG",
        "EMBEDDED_REDIS_DIR": "/tmp/pushservice-redis",
    }

    settings = dataclasses.asdict(from_env(env))

    expected = {
        "redis_url": "redis://cache.internal:6380/5",
        "redis_configured": True,
        "service_port": 9000,
        "instance_name": "push-a.1",
        "workers": 4,
        "max_connections": 500,
        "heartbeat_interval": 2.5,
        "message_ttl": 60,
        "cors_origins": ("https://app.example.com",),
        "jwt_secret": "s3cret",
        "enable_auth": False,
        "stream_key_prefix": "push-test.1",
        "stream_max_length": 5000,
        "connection_queue_size": 50,
        "max_message_bytes": 2048,
        "max_request_bytes": 4096,
        "max_batch_size": 10,
        "replay_max_messages": 20,
        "write_timeout_seconds": 1.5,
        "shutdown_grace_seconds": 3.0,
        "sse_retry_ms": 250,
        "reader_block_ms": 100,
        "reader_batch_size": 64,
        "log_level": "debug",
        "embedded_redis_dir": "/tmp/pushservice-redis",
    }
    assert {name: settings[name] for name in expected} == expected


def test_values_are_stripped_and_blank_values_mean_the_default():
    settings = from_env({"SERVICE_PORT": " 9001 ", "MESSAGE_TTL": "  ",
                                  "MAX_CONNECTIONS": ""})

    assert settings.service_port == 9001
    assert settings.message_ttl == 3600
    assert settings.max_connections == 10000


@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True),
    ("0", False), ("false", False), ("False", False), ("no", False), ("off", False),
])
def test_enable_auth_accepts_the_usual_spellings(raw, expected):
    assert from_env({"ENABLE_AUTH": raw}).enable_auth is expected


def test_several_bad_variables_are_reported_together():
    problems = problems_of({
        "SERVICE_PORT": "http",
        "MAX_CONNECTIONS": "0",
        "HEARTBEAT_INTERVAL": "soon",
        "ENABLE_AUTH": "maybe",
        "LOG_LEVEL": "loud",
        "REDIS_DB": "-1",
    })

    assert len(problems) == 6
    text = "\n".join(problems)
    assert "SERVICE_PORT='http': expected an integer" in text
    assert "MAX_CONNECTIONS=0: expected at least 1" in text
    assert "HEARTBEAT_INTERVAL='soon': expected a number" in text
    assert "ENABLE_AUTH='maybe': expected true or false" in text
    assert "LOG_LEVEL='loud': expected one of debug, info, warning, error, critical" in text
    assert "REDIS_DB=-1: expected at least 0" in text


def test_settings_error_message_lists_every_problem():
    with pytest.raises(SettingsError) as caught:
        from_env({"SERVICE_PORT": "70000", "MESSAGE_TTL": "1.5"})

    message = str(caught.value)
    assert message.startswith("invalid settings:")
    assert "SERVICE_PORT=70000: expected at most 65535" in message
    assert "MESSAGE_TTL='1.5': expected an integer" in message


@pytest.mark.parametrize("name, raw, expected", [
    ("SERVICE_PORT", "0", "expected at least 1"),
    ("SERVICE_PORT", "65536", "expected at most 65535"),
    ("SERVICE_PORT", "80.0", "expected an integer"),
    ("REDIS_PORT", "redis", "expected an integer"),
    ("WORKERS", "0", "expected at least 1"),
    ("MESSAGE_TTL", "0", "expected at least 1"),
    ("HEARTBEAT_INTERVAL", "0", "expected at least 0.05"),
    ("HEARTBEAT_INTERVAL", "nan", "expected a finite number"),
    ("HEARTBEAT_INTERVAL", "inf", "expected a finite number"),
    ("CONNECTION_QUEUE_SIZE", "1", "expected at least 2"),
    ("MAX_MESSAGE_BYTES", "100", "expected at least 256"),
    ("MAX_REQUEST_BYTES", "10", "expected at least 1024"),
    ("STREAM_MAX_LENGTH", "99", "expected at least 100"),
    ("SSE_RETRY_MS", "-1", "expected at least 0"),
    ("READER_BLOCK_MS", "1", "expected at least 10"),
    ("WRITE_TIMEOUT_SECONDS", "0", "expected at least 0.1"),
    ("SHUTDOWN_GRACE_SECONDS", "0.1", "expected at least 0.5"),
    ("STREAM_KEY_PREFIX", "push service", "letters, digits, '-', '_' or '.'"),
    ("STREAM_KEY_PREFIX", "push{x}", "letters, digits, '-', '_' or '.'"),
    ("STREAM_KEY_PREFIX", "p" * 65, "letters, digits, '-', '_' or '.'"),
    ("INSTANCE_NAME", "vm 1", "letters, digits, '-', '_' or '.'"),
    ("REDIS_URL", "http://localhost:6379", "expected a redis://, rediss:// or unix:// URL"),
    ("CORS_ORIGINS", "localhost:3000", "expected a JSON list of origins"),
    ("CORS_ORIGINS", '["http://a.example", 3]', "expected a JSON list of origins"),
    ("CORS_ORIGINS", '["http://a.example"', "expected a JSON list of origins"),
])
def test_a_bad_variable_is_named_with_what_it_expected(name, raw, expected):
    (problem,) = problems_of({name: raw})

    assert problem.startswith(f"{name}=")
    assert expected in problem


def test_request_limit_below_message_limit_is_reported():
    (problem,) = problems_of({"MAX_MESSAGE_BYTES": "4096", "MAX_REQUEST_BYTES": "2048"})

    assert "MAX_REQUEST_BYTES must be at least MAX_MESSAGE_BYTES (4096)" in problem


def test_cors_origins_as_a_json_list():
    settings = from_env(
        {"CORS_ORIGINS": '["http://localhost:3000", "https://app.example.com/"]'})

    assert settings.cors_origins == ("http://localhost:3000", "https://app.example.com")


def test_cors_origins_comma_separated():
    settings = from_env(
        {"CORS_ORIGINS": "http://localhost:3000, https://app.example.com/ ,"})

    assert settings.cors_origins == ("http://localhost:3000", "https://app.example.com")


def test_cors_origins_wildcard():
    assert from_env({"CORS_ORIGINS": "*"}).cors_origins == ("*",)


def test_redis_url_wins_over_host_port_password_db():
    settings = from_env({
        "REDIS_URL": "rediss://cache.example.com:6390/7",
        "REDIS_HOST": "ignored", "REDIS_PORT": "1", "REDIS_DB": "3",
    })

    assert settings.redis_url == "rediss://cache.example.com:6390/7"
    assert settings.redis_configured is True


def test_redis_host_port_password_db_build_the_url():
    settings = from_env({"REDIS_HOST": "redis.internal", "REDIS_PORT": "6380",
                                  "REDIS_PASSWORD": "p@ss:w/rd", "REDIS_DB": "4"})

    assert settings.redis_configured is True
    parsed = parse_url(settings.redis_url)
    assert parsed == {"host": "redis.internal", "port": 6380, "password": "p@ss:w/rd", "db": 4}


def test_redis_host_alone_keeps_the_default_port_and_db():
    settings = from_env({"REDIS_HOST": "redis.internal"})

    assert settings.redis_url == "redis://redis.internal:6379/2"
    assert settings.redis_configured is True


def test_unix_socket_url_is_accepted():
    settings = from_env({"REDIS_URL": "unix:///run/redis.sock?db=2"})

    assert settings.redis_url == "unix:///run/redis.sock?db=2"


def test_ipv6_redis_host_builds_a_usable_url():
    settings = from_env({"REDIS_HOST": "::1", "REDIS_PORT": "6380"})

    parsed = parse_url(settings.redis_url)
    assert (parsed["host"], parsed["port"]) == ("::1", 6380)


@pytest.mark.parametrize("url, shown", [
    ("redis://:secret@localhost:6379/2", "redis://***@localhost:6379/2"),
    ("redis://user:secret@localhost:6379/2", "redis://***@localhost:6379/2"),
    ("rediss://default:s3cr@t@cache:6390/0", "rediss://***@cache:6390/0"),
    ("redis://localhost:6379/2", "redis://localhost:6379/2"),
])
def test_redis_url_redacted_hides_passwords(url, shown):
    assert Settings(redis_url=url).redis_url_redacted == shown


def test_redis_password_from_the_environment_is_redacted():
    settings = from_env({"REDIS_PASSWORD": "hunter2"})

    assert "hunter2" in settings.redis_url
    assert "hunter2" not in settings.redis_url_redacted


def test_redis_url_redacted_hides_a_password_query_parameter():
    settings = from_env({"REDIS_URL": "redis://localhost:6379/2?password=hunter2"})

    assert parse_url(settings.redis_url)["password"] == "hunter2"
    assert "hunter2" not in settings.redis_url_redacted


def test_settings_are_frozen_and_replace_returns_a_copy():
    settings = Settings()
    changed = settings.replace(max_batch_size=5)

    assert changed.max_batch_size == 5
    assert settings.max_batch_size == 1000
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_batch_size = 5  # type: ignore[misc]


def test_default_instance_name_is_a_plain_name_ending_in_the_port():
    settings = from_env({"SERVICE_PORT": "9100"})

    assert settings.instance_name.endswith("-9100")
    assert from_env({"INSTANCE_NAME": settings.instance_name}).instance_name == (
        settings.instance_name)


# -- authentication, CORS and limits ------------------------------------------------------

GOOD_SECRET = "3f9a1c7e5b2d8f604a1e9c3b7d5f2a8e"  # 32 bytes, random-looking


def _auth_problems(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    return "\n".join(caught.value.problems)


@pytest.mark.parametrize("secret, expected", [
    ("", "JWT_SECRET is empty"),
    ("short-secret", "JWT_SECRET is 12 bytes: expected at least 32"),
    ("your-secret-key", "example value"),
    ("CHANGEME", "example value"),
    ("a" * 40, "repeats a few characters"),
])
def test_auth_on_refuses_to_start_with_a_weak_secret(secret, expected):
    problems = _auth_problems({"JWT_SECRET": secret})
    assert expected in problems
    assert "ENABLE_AUTH=false" in problems  # says how to run without tokens instead


def test_a_good_secret_starts_and_auth_is_the_default():
    settings = Settings.from_env({"JWT_SECRET": GOOD_SECRET})
    assert settings.enable_auth
    assert settings.jwt_algorithms == ("HS256",)
    assert GOOD_SECRET not in repr(settings)


def test_longer_hashes_need_longer_secrets():
    assert "expected at least 64" in _auth_problems({"JWT_SECRET": GOOD_SECRET,
                                                "JWT_ALGORITHMS": "HS256,HS512"})


def test_auth_off_needs_no_secret():
    settings = Settings.from_env({"ENABLE_AUTH": "false"})
    assert not settings.enable_auth and settings.jwt_secret == ""


@pytest.mark.parametrize("value", ["none", "HS256,none", "HS1", ","])
def test_jwt_algorithms_is_an_allow_list_without_none(value):
    assert "JWT_ALGORITHMS" in _auth_problems({"JWT_SECRET": GOOD_SECRET, "JWT_ALGORITHMS": value})


def test_public_key_algorithms_need_a_public_key_as_text_or_file(tmp_path):
    assert "JWT_PUBLIC_KEY is empty" in _auth_problems({"JWT_ALGORITHMS": "RS256"})
    pem = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----"
    settings = Settings.from_env({"JWT_ALGORITHMS": "rs256", "JWT_PUBLIC_KEY": pem})
    assert settings.jwt_algorithms == ("RS256",) and settings.jwt_public_key == pem
    # A PEM pasted into one line of an env file, with literal \n.
    escaped = pem.replace("\n", "\\n")
    assert Settings.from_env({"JWT_ALGORITHMS": "RS256",
                              "JWT_PUBLIC_KEY": escaped}).jwt_public_key == pem
    key_file = tmp_path / "public.pem"
    key_file.write_text(pem + "\n")
    assert Settings.from_env({"JWT_ALGORITHMS": "RS256",
                              "JWT_PUBLIC_KEY": str(key_file)}).jwt_public_key == pem
    problems = _auth_problems({"JWT_ALGORITHMS": "RS256", "JWT_PUBLIC_KEY": str(tmp_path / "no")})
    assert "readable PEM file" in problems and "is empty" not in problems


def test_issuer_audience_leeway_and_cookie_name():
    settings = Settings.from_env({
        "JWT_SECRET": GOOD_SECRET, "JWT_ISSUER": "https://login.example",
        "JWT_AUDIENCE": "pushservice, push", "JWT_LEEWAY_SECONDS": "2.5",
        "AUTH_COOKIE_NAME": "push_token"})
    assert settings.jwt_issuer == "https://login.example"
    assert settings.jwt_audience == ("pushservice", "push")
    assert settings.jwt_leeway_seconds == 2.5 and settings.auth_cookie_name == "push_token"
    problems = _auth_problems({"JWT_SECRET": GOOD_SECRET, "JWT_LEEWAY_SECONDS": "3600",
                          "AUTH_COOKIE_NAME": "a;b"})
    assert "JWT_LEEWAY_SECONDS" in problems and "AUTH_COOKIE_NAME" in problems


def test_limits_have_defaults_and_are_checked():
    settings = Settings.from_env({"ENABLE_AUTH": "false"})
    assert settings.max_channels_per_connection == 100
    assert settings.max_name_length == 128 and settings.max_topics_per_message == 100
    assert settings.publish_rate_per_service == 1000 and settings.publish_burst_per_service == 5000
    problems = _auth_problems({"ENABLE_AUTH": "false", "MAX_CHANNELS_PER_CONNECTION": "0",
                          "MAX_NAME_LENGTH": "x", "PUBLISH_RATE_PER_SERVICE": "-1",
                          "PUBLISH_BURST_PER_SERVICE": "10"})
    for name in ("MAX_CHANNELS_PER_CONNECTION", "MAX_NAME_LENGTH", "PUBLISH_RATE_PER_SERVICE",
                 "PUBLISH_BURST_PER_SERVICE=10: expected at least MAX_BATCH_SIZE"):
        assert name in problems
    # Without a rate limit, the burst does not matter.
    assert Settings.from_env({"ENABLE_AUTH": "false", "PUBLISH_RATE_PER_SERVICE": "0",
                              "PUBLISH_BURST_PER_SERVICE": "1"}).publish_rate_per_service == 0


def test_every_problem_is_reported_together():
    problems = _auth_problems({"JWT_SECRET": "x", "JWT_ALGORITHMS": "none",
                          "CORS_ORIGINS": "not a url", "MAX_NAME_LENGTH": "0"})
    for name in ("JWT_SECRET", "JWT_ALGORITHMS", "CORS_ORIGINS", "MAX_NAME_LENGTH"):
        assert name in problems


def test_service_host_is_an_ip_address():
    assert from_env({}).service_host == "0.0.0.0"
    assert from_env({"SERVICE_HOST": "127.0.0.1"}).service_host == "127.0.0.1"
    assert from_env({"SERVICE_HOST": "[::1]"}).service_host == "::1"
    (problem,) = problems_of({"SERVICE_HOST": "localhost; rm -rf /"})
    assert problem.startswith("SERVICE_HOST=")
