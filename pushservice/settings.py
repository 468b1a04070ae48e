"""Service settings: one frozen object, read from the environment once.

This is the only module that reads ``os.environ``. ``Settings.from_env()`` checks every
variable and reports all bad ones together, naming each variable and what it expected.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from .engine.topics import SERVICE_PATTERN
from .errors import SettingsError

DEFAULT_CORS_ORIGINS = ("http://localhost:3000",)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# REDIS_HOST, REDIS_PORT and REDIS_DB when unset.
DEFAULT_REDIS_HOST, DEFAULT_REDIS_PORT, DEFAULT_REDIS_DB = "localhost", 6379, 2
# The words a yes/no setting or query option may be given as (case-insensitive).
FLAG_WORDS = {"1": True, "true": True, "yes": True, "on": True,
              "0": False, "false": False, "no": False, "off": False}
# Algorithms a token may be signed with. "none" is never accepted.
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
# RFC 7518 3.2: an HMAC key at least as long as the hash.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# Placeholders seen in examples and templates: a service signed with one is open to all.
_EXAMPLE_SECRETS = frozenset({
    "your-secret-key", "your_secret_key", "your-jwt-secret", "your_jwt_secret",
    "your-secret-key-here", "jwt-secret", "jwt_secret", "jwt-secret-key", "secret",
    "secret-key", "secret_key", "changeme", "change-me", "change_me", "changeit",
    "please-change-me", "your-256-bit-secret", "supersecret", "super-secret-key",
})


@dataclass(frozen=True)
class Settings:
    """Everything the service can be configured with.

    Each field's default is the default of its environment variable (the field's name in
    capitals). Durations carry their unit in the name; 0 never means "unlimited" unless
    the field's comment says so.
    """

    redis_url: str = f"redis://{DEFAULT_REDIS_HOST}:{DEFAULT_REDIS_PORT}/{DEFAULT_REDIS_DB}"
    # True when REDIS_URL, REDIS_HOST or REDIS_SENTINELS was given; the launcher only
    # embeds a Redis when nothing was configured and nothing answers on localhost:6379.
    redis_configured: bool = False
    # A Redis managed by Sentinel: the sentinels' host:port addresses (when given, the
    # primary is asked of them and REDIS_URL gives only the database and password), the
    # name they know the primary by, and the sentinels' own password.
    redis_sentinels: tuple[str, ...] = ()
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: str = field(default="", repr=False)
    # Acknowledge a publish only once this many replicas have it (Redis WAIT), waiting at
    # most REDIS_WAIT_TIMEOUT_MS; 0: as soon as the primary has it.
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    service_port: int = 8089
    # The address to listen on: every interface by default; `make run` with authentication
    # off listens on loopback only, unless this is set.
    service_host: str = "0.0.0.0"
    # How this instance names itself in connection lists, metrics and registration.
    instance_name: str = "pushservice"
    workers: int = 2
    max_connections: int = 10000
    heartbeat_interval: float = 30.0
    message_ttl: int = 3600
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    jwt_secret: str = field(default="", repr=False)
    enable_auth: bool = True
    # Accepted signing algorithms; HS* verify with jwt_secret, the others with
    # jwt_public_key (PEM text).
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_public_key: str = ""
    # When set, tokens must carry this issuer / one of these audiences; when the audience
    # is unset, a token that names one is refused.
    jwt_issuer: str = ""
    jwt_audience: tuple[str, ...] = ()
    # Clock skew tolerated on exp, nbf and iat; a stream closes at exp + leeway.
    jwt_leeway_seconds: float = 10.0
    auth_cookie_name: str = "pushservice_token"
    stream_key_prefix: str = "pushservice"
    stream_max_length: int = 1_000_000
    # The stream's size in bytes at most (messages and their headers; 0: no bound).
    stream_max_bytes: int = 256 * 1024 * 1024
    # Publisher-chosen message ids remembered per service at most (the oldest go first).
    message_ids_per_service: int = 100_000
    connection_queue_size: int = 1000
    max_message_bytes: int = 64 * 1024
    max_request_bytes: int = 8 * 1024 * 1024
    max_batch_size: int = 1000
    max_channels_per_connection: int = 100
    # Channels, user, session and target values, client message ids.
    max_name_length: int = 128
    # Distinct topics one message's target may name.
    max_topics_per_message: int = 100
    # Token bucket per publishing service, counted in Redis across instances: messages
    # per second (0 means no limit) and the most it may send at once.
    publish_rate_per_service: float = 1000.0
    publish_burst_per_service: int = 5000
    replay_max_messages: int = 10_000
    # Entries one replay reads at most, sent or not: bounds the work of one request.
    replay_max_entries: int = 20_000
    # The newest entries each worker keeps in memory, so that resumes close to now (a
    # reconnect storm) need nothing from Redis: at most this many, and bodies of at most
    # this many bytes. 0 entries: every resume reads Redis.
    recent_history_entries: int = 10_000
    recent_history_bytes: int = 16 * 1024 * 1024
    write_timeout_seconds: float = 10.0
    # The longest a publish, or a stream's admission, waits for Redis: then 503 (a
    # refusal stream for a stream) and, for a publish, nothing was written. Also how
    # long a request body, and a new connection's first request, may take to arrive.
    request_timeout_seconds: float = 5.0
    shutdown_grace_seconds: float = 10.0
    sse_retry_ms: int = 3000
    reader_block_ms: int = 2000
    # Each worker publishes a probe this often and must read it back: /health turns 503
    # (and the reader reconnects) after two intervals without one. 0 turns probes off.
    health_probe_seconds: float = 5.0
    # Entries per XREAD: also bounds how long one routing pass keeps other greenlets
    # waiting (250 entries for 5,000 subscribers is about 0.6 s of offers).
    reader_batch_size: int = 250
    log_level: str = "info"
    # Where the launcher keeps an embedded Redis's data, relative to the project.
    embedded_redis_dir: str = "var/redis"
    # Operations: the connection registry, metrics and registration.
    max_connections_per_user: int = 20
    registry_refresh_seconds: float = 10.0
    registry_ttl_seconds: float = 30.0
    metrics_allowed_networks: tuple[str, ...] = ()
    metrics_require_admin: bool = False
    prometheus_multiproc_dir: str = ""
    service_name: str = "pushservice"
    advertise_host: str = ""
    gateway_url: str = ""
    gateway_token: str = ""
    gateway_renew_seconds: float = 30.0
    # Delivery confirmation (messages with metadata.require_ack, docs/delivery-confirmation.md):
    # seconds a user has to acknowledge before the message is delivered again (per message:
    # metadata.ack_timeout; priority scales it), redeliveries per user at most (0: none,
    # so no offline inbox either), unacknowledged messages kept per user (beyond it the
    # oldest of the lowest priority leave the inbox), ids one acknowledgement or status
    # request may name, and how long a message's delivery status outlives its expiry.
    ack_timeout_seconds: int = 30
    ack_max_redeliveries: int = 5
    ack_inbox_max_messages: int = 1000
    max_ack_batch_size: int = 1000
    ack_status_retention_seconds: int = 3600
    # Where to POST a signed notice when a message expires unacknowledged (empty: none),
    # the shared secret of its HMAC-SHA256 signature, how long one attempt may take and
    # how many attempts a notice gets.
    ack_webhook_url: str = ""
    ack_webhook_secret: str = field(default="", repr=False)
    ack_webhook_timeout_seconds: float = 5.0
    ack_webhook_max_attempts: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``).

        Raises SettingsError listing every invalid variable at once.
        """
        env = os.environ if environ is None else environ
        d = cls()  # every default is written once, in the fields above
        reader = _EnvReader(env, d)
        values: dict[str, Any] = {
            "redis_url": _redis_url(reader),
            "redis_configured": bool(env.get("REDIS_URL") or env.get("REDIS_HOST")
                                     or env.get("REDIS_SENTINELS")),
            "redis_sentinels": reader.addresses("REDIS_SENTINELS"),
            "redis_sentinel_master": reader.name("REDIS_SENTINEL_MASTER"),
            "redis_sentinel_password": env.get("REDIS_SENTINEL_PASSWORD", ""),
            "redis_wait_replicas": reader.integer("REDIS_WAIT_REPLICAS", minimum=0,
                                                  maximum=100),
            "redis_wait_timeout_ms": reader.integer("REDIS_WAIT_TIMEOUT_MS", minimum=1,
                                                    maximum=60_000),
            "service_port": reader.integer("SERVICE_PORT", minimum=1, maximum=65535),
            "service_host": reader.host("SERVICE_HOST"),
            "instance_name": reader.name("INSTANCE_NAME", _default_instance_name(env)),
            "workers": reader.integer("WORKERS", _default_workers(), minimum=1, maximum=256),
            "max_connections": reader.integer("MAX_CONNECTIONS", minimum=1),
            "heartbeat_interval": reader.number("HEARTBEAT_INTERVAL", minimum=0.05),
            "message_ttl": reader.integer("MESSAGE_TTL", minimum=1),
            "cors_origins": reader.origins("CORS_ORIGINS"),
            "jwt_secret": env.get("JWT_SECRET", ""),
            "enable_auth": reader.boolean("ENABLE_AUTH"),
            "jwt_algorithms": reader.algorithms("JWT_ALGORITHMS"),
            "jwt_public_key": reader.public_key("JWT_PUBLIC_KEY"),
            "jwt_issuer": env.get("JWT_ISSUER", "").strip(),
            "jwt_audience": reader.words("JWT_AUDIENCE"),
            "jwt_leeway_seconds": reader.number("JWT_LEEWAY_SECONDS", minimum=0, maximum=300),
            "auth_cookie_name": reader.name("AUTH_COOKIE_NAME"),
            "stream_key_prefix": reader.name("STREAM_KEY_PREFIX"),
            "stream_max_length": reader.integer("STREAM_MAX_LENGTH", minimum=100),
            "stream_max_bytes": reader.integer("STREAM_MAX_BYTES", minimum=0),
            "message_ids_per_service": reader.integer("MESSAGE_IDS_PER_SERVICE", minimum=1),
            "connection_queue_size": reader.integer("CONNECTION_QUEUE_SIZE", minimum=2,
                                                    maximum=1_000_000),
            "max_message_bytes": reader.integer("MAX_MESSAGE_BYTES", minimum=256),
            "max_request_bytes": reader.integer("MAX_REQUEST_BYTES", minimum=1024),
            "max_batch_size": reader.integer("MAX_BATCH_SIZE", minimum=1),
            "max_channels_per_connection": reader.integer("MAX_CHANNELS_PER_CONNECTION",
                                                          minimum=1, maximum=10_000),
            "max_name_length": reader.integer("MAX_NAME_LENGTH", minimum=8, maximum=1024),
            "max_topics_per_message": reader.integer("MAX_TOPICS_PER_MESSAGE", minimum=1,
                                                     maximum=10_000),
            "publish_rate_per_service": reader.number("PUBLISH_RATE_PER_SERVICE", minimum=0),
            "publish_burst_per_service": reader.integer("PUBLISH_BURST_PER_SERVICE", minimum=1),
            "replay_max_messages": reader.integer("REPLAY_MAX_MESSAGES", minimum=1),
            "replay_max_entries": reader.integer("REPLAY_MAX_ENTRIES", minimum=500),
            "recent_history_entries": reader.integer("RECENT_HISTORY_ENTRIES", minimum=0,
                                                     maximum=1_000_000),
            "recent_history_bytes": reader.integer("RECENT_HISTORY_BYTES", minimum=0),
            "write_timeout_seconds": reader.number("WRITE_TIMEOUT_SECONDS", minimum=0.1),
            "request_timeout_seconds": reader.number("REQUEST_TIMEOUT_SECONDS", minimum=1.0,
                                                     maximum=60),
            "shutdown_grace_seconds": reader.number("SHUTDOWN_GRACE_SECONDS", minimum=0.5),
            "sse_retry_ms": reader.integer("SSE_RETRY_MS", minimum=0),
            "reader_block_ms": reader.integer("READER_BLOCK_MS", minimum=10),
            "health_probe_seconds": reader.number("HEALTH_PROBE_SECONDS", minimum=0,
                                                  maximum=3600),
            "reader_batch_size": reader.integer("READER_BATCH_SIZE", minimum=1),
            "embedded_redis_dir": (env.get("EMBEDDED_REDIS_DIR", "").strip()
                                   or d.embedded_redis_dir),
            "max_connections_per_user": reader.integer("MAX_CONNECTIONS_PER_USER", minimum=0),
            "registry_refresh_seconds": reader.number("REGISTRY_REFRESH_SECONDS", minimum=0.1),
            "registry_ttl_seconds": reader.number("REGISTRY_TTL_SECONDS", minimum=0.3),
            "metrics_allowed_networks": reader.networks("METRICS_ALLOWED_NETWORKS"),
            "metrics_require_admin": reader.boolean("METRICS_REQUIRE_ADMIN"),
            "prometheus_multiproc_dir": env.get("PROMETHEUS_MULTIPROC_DIR", ""),
            "service_name": reader.name("SERVICE_NAME"),
            "advertise_host": env.get("ADVERTISE_HOST", "").strip(),
            "gateway_url": reader.url("GATEWAY_URL"),
            "gateway_token": env.get("GATEWAY_TOKEN", ""),
            "gateway_renew_seconds": reader.number("GATEWAY_RENEW_SECONDS", minimum=1.0),
            "log_level": reader.choice("LOG_LEVEL", LOG_LEVELS),
            "ack_timeout_seconds": reader.integer("ACK_TIMEOUT_SECONDS", minimum=1,
                                                  maximum=86_400),
            "ack_max_redeliveries": reader.integer("ACK_MAX_REDELIVERIES", minimum=0,
                                                   maximum=100),
            "ack_inbox_max_messages": reader.integer("ACK_INBOX_MAX_MESSAGES", minimum=1,
                                                     maximum=100_000),
            "max_ack_batch_size": reader.integer("MAX_ACK_BATCH_SIZE", minimum=1,
                                                 maximum=10_000),
            "ack_status_retention_seconds": reader.integer("ACK_STATUS_RETENTION_SECONDS",
                                                           minimum=0, maximum=604_800),
            "ack_webhook_url": reader.url("ACK_WEBHOOK_URL"),
            "ack_webhook_secret": env.get("ACK_WEBHOOK_SECRET", ""),
            "ack_webhook_timeout_seconds": reader.number("ACK_WEBHOOK_TIMEOUT_SECONDS",
                                                         minimum=0.1, maximum=60),
            "ack_webhook_max_attempts": reader.integer("ACK_WEBHOOK_MAX_ATTEMPTS", minimum=1,
                                                       maximum=100),
        }
        if values["redis_wait_timeout_ms"] / 1000 >= values["request_timeout_seconds"]:
            reader.problems.append(
                f"REDIS_WAIT_TIMEOUT_MS={values['redis_wait_timeout_ms']}: expected less "
                f"than REQUEST_TIMEOUT_SECONDS ({values['request_timeout_seconds']:g} s)")
        if values["max_request_bytes"] < values["max_message_bytes"]:
            reader.problems.append(
                "MAX_REQUEST_BYTES must be at least MAX_MESSAGE_BYTES "
                f"({values['max_message_bytes']})"
            )
        if values["registry_ttl_seconds"] < 2 * values["registry_refresh_seconds"]:
            reader.problems.append(
                "REGISTRY_TTL_SECONDS must be at least twice REGISTRY_REFRESH_SECONDS "
                f"({values['registry_refresh_seconds']})"
            )
        if (values["publish_rate_per_service"]
                and values["publish_burst_per_service"] < values["max_batch_size"]):
            reader.problems.append(
                f"PUBLISH_BURST_PER_SERVICE={values['publish_burst_per_service']}: expected "
                f"at least MAX_BATCH_SIZE ({values['max_batch_size']}), or no full batch "
                "could ever be published")
        if values["ack_webhook_url"] and len(values["ack_webhook_secret"].encode()) < 16:
            reader.problems.append(
                "ACK_WEBHOOK_SECRET: expected at least 16 random bytes when ACK_WEBHOOK_URL "
                "is set (the receiver checks each notice's signature with it; openssl rand "
                "-hex 32)")
        reader.problems.extend(auth_problems(
            values["enable_auth"], values["jwt_algorithms"], values["jwt_secret"],
            # An unreadable key file is reported above, not a second time as missing.
            values["jwt_public_key"] or env.get("JWT_PUBLIC_KEY", "").strip()))
        if reader.problems:
            raise SettingsError(reader.problems)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied (for tests and the launcher)."""
        return dataclasses.replace(self, **changes)

    @property
    def redis_url_redacted(self) -> str:
        """The Redis URL without its password, for logs and status pages."""
        parts = urlsplit(self.redis_url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        query = "&".join(
            f"{name}=***" if name.lower() == "password" else f"{name}={value}" if sep else name
            for name, sep, value in (item.partition("=") for item in parts.query.split("&")
                                     if item)
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    @property
    def worker_connections(self) -> int:
        """Greenlets per worker: room for every stream of the instance plus API calls."""
        return self.max_connections + 1000


def secret_problem(secret: str, algorithms: tuple[str, ...] = ("HS256",)) -> str | None:
    """Why ``secret`` must not sign tokens with ``algorithms``, or None when it may."""
    minimum = max((MIN_SECRET_BYTES.get(alg, 32) for alg in algorithms), default=32)
    how = f"at least {minimum} random bytes (openssl rand -hex {minimum})"
    if not secret:
        return f"JWT_SECRET is empty: set it to {how}"
    if secret.strip().lower() in _EXAMPLE_SECRETS:
        return ("JWT_SECRET is an example value from documentation: anyone could sign "
                f"tokens with it; set it to {how}")
    if len(secret.encode()) < minimum:
        return f"JWT_SECRET is {len(secret.encode())} bytes: expected {how}"
    if len(set(secret)) < 8:
        return f"JWT_SECRET repeats a few characters: expected {how}"
    return None


def auth_problems(enable_auth: bool, algorithms: tuple[str, ...], secret: str,
                  public_key: str) -> list[str]:
    """What stops authentication from working with these settings (nothing when it is
    disabled)."""
    if not enable_auth:
        return []
    problems = []
    hmac = tuple(alg for alg in algorithms if alg in HMAC_ALGORITHMS)
    if hmac:
        problem = secret_problem(secret, hmac)
        if problem:
            problems.append(problem + " (or set ENABLE_AUTH=false to run without "
                            "authentication)")
    asymmetric = [alg for alg in algorithms if alg in PUBLIC_KEY_ALGORITHMS]
    if asymmetric and not public_key:
        problems.append(f"JWT_PUBLIC_KEY is empty: JWT_ALGORITHMS names {', '.join(asymmetric)}, "
                        "which verify with a public key (PEM text or a file path)")
    return problems


def _default_instance_name(env: Mapping[str, str]) -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:40]
    port = re.sub(r"[^0-9]", "", env.get("SERVICE_PORT", "")) or str(Settings.service_port)
    return f"{host or 'pushservice'}-{port[:5]}"


def _default_workers() -> int:
    # Gevent workers are single-threaded; one per core uses the machine.
    return max(1, os.cpu_count() or 1)


def _redis_url(reader: _EnvReader) -> str:
    env = reader.env
    url = env.get("REDIS_URL", "").strip()
    if url:
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            reader.problems.append(
                f"REDIS_URL={url!r}: expected a redis://, rediss:// or unix:// URL"
            )
        return url
    host = env.get("REDIS_HOST", "").strip() or DEFAULT_REDIS_HOST
    port = reader.integer("REDIS_PORT", DEFAULT_REDIS_PORT, minimum=1, maximum=65535)
    db = reader.integer("REDIS_DB", DEFAULT_REDIS_DB, minimum=0, maximum=1_000_000)
    password = env.get("REDIS_PASSWORD", "")
    auth = f":{quote(password, safe='')}@" if password else ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"redis://{auth}{host}:{port}/{db}"


_FROM_FIELD = object()  # a variable's default is its Settings field's default


class _EnvReader:
    """Parses typed values from the environment, collecting every problem. A variable's
    default is that of the Settings field of the same name, unless one is given."""

    def __init__(self, env: Mapping[str, str], defaults: Settings | None = None) -> None:
        self.env = env
        self.defaults = defaults
        self.problems: list[str] = []

    def _default(self, name: str, default: Any) -> Any:
        return getattr(self.defaults, name.lower()) if default is _FROM_FIELD else default

    def _parse(self, name: str, default: Any, convert: Callable[[str], Any], expected: str):
        default = self._default(name, default)
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return convert(raw.strip())
        except ValueError:
            self.problems.append(f"{name}={raw!r}: expected {expected}")
            return default

    def integer(self, name: str, default: Any = _FROM_FIELD, minimum: int | None = None,
                maximum: int | None = None) -> int:
        default = self._default(name, default)
        value = self._parse(name, default, int, "an integer")
        return self._in_range(name, value, default, minimum, maximum)

    def number(self, name: str, default: Any = _FROM_FIELD, minimum: float | None = None,
               maximum: float | None = None) -> float:
        default = self._default(name, default)
        value = self._parse(name, default, float, "a number")
        if not math.isfinite(value):
            self.problems.append(f"{name}={value!r}: expected a finite number")
            return default
        return self._in_range(name, value, default, minimum, maximum)

    def _in_range(self, name, value, default, minimum, maximum):
        if minimum is not None and value < minimum:
            self.problems.append(f"{name}={value}: expected at least {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.problems.append(f"{name}={value}: expected at most {maximum}")
            return default
        return value

    def boolean(self, name: str, default: Any = _FROM_FIELD) -> bool:
        def convert(raw: str) -> bool:
            value = FLAG_WORDS.get(raw.lower())
            if value is None:
                raise ValueError(raw)
            return value

        return self._parse(name, default, convert, "true or false")

    def choice(self, name: str, options: tuple[str, ...], default: Any = _FROM_FIELD) -> str:
        def convert(raw: str) -> str:
            if raw.lower() not in options:
                raise ValueError(raw)
            return raw.lower()

        return self._parse(name, default, convert, "one of " + ", ".join(options))

    def name(self, name: str, default: Any = _FROM_FIELD) -> str:
        def convert(raw: str) -> str:
            if not SERVICE_PATTERN.fullmatch(raw):
                raise ValueError(raw)
            return raw

        return self._parse(name, default, convert, "1-64 letters, digits, '-', '_' or '.'")

    def host(self, name: str, default: Any = _FROM_FIELD) -> str:
        """An IP address to listen on (``[...]`` around an IPv6 one is accepted)."""
        def convert(raw: str) -> str:
            return str(ipaddress.ip_address(raw.strip("[]")))

        return self._parse(name, default, convert, "an IP address such as 127.0.0.1 or ::")

    def networks(self, name: str) -> tuple[str, ...]:
        def convert(raw: str) -> tuple[str, ...]:
            items = tuple(item.strip() for item in raw.split(",") if item.strip())
            for item in items:
                ipaddress.ip_network(item, strict=False)  # ValueError when malformed
            return items

        return self._parse(name, (), convert, "comma-separated addresses or CIDR networks")

    def addresses(self, name: str) -> tuple[str, ...]:
        """Comma-separated host:port addresses; empty when unset."""
        def convert(raw: str) -> tuple[str, ...]:
            items = tuple(item.strip() for item in raw.split(",") if item.strip())
            for item in items:
                host, _, port = item.rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError(item)
            return items

        return self._parse(name, (), convert, "comma-separated host:port addresses")

    def url(self, name: str) -> str:
        def convert(raw: str) -> str:
            parts = urlsplit(raw)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(raw)
            return raw.rstrip("/")

        return self._parse(name, "", convert, "an http:// or https:// URL")

    def origins(self, name: str, default: Any = _FROM_FIELD) -> tuple[str, ...]:
        def convert(raw: str) -> tuple[str, ...]:
            if raw.startswith("["):
                try:
                    parsed = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ValueError(raw) from exc
                if not all(isinstance(item, str) for item in parsed):
                    raise ValueError(raw)
                items = parsed
            else:
                items = raw.split(",")
            origins = tuple(item.strip().rstrip("/") for item in items if item.strip())
            for origin in origins:
                if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
                    raise ValueError(raw)
            return origins

        return self._parse(
            name, default, convert,
            'a JSON list of origins like ["http://localhost:3000"] or a comma-separated list',
        )

    def words(self, name: str) -> tuple[str, ...]:
        """A comma-separated list; empty when unset."""
        raw = self.env.get(name, "")
        return tuple(item.strip() for item in raw.split(",") if item.strip())

    def algorithms(self, name: str, default: Any = _FROM_FIELD) -> tuple[str, ...]:
        known = HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS
        by_upper = {alg.upper(): alg for alg in known}

        def convert(raw: str) -> tuple[str, ...]:
            chosen = []
            for item in raw.split(","):
                if item.strip():
                    alg = by_upper.get(item.strip().upper())
                    if alg is None:
                        raise ValueError(item)
                    chosen.append(alg)
            if not chosen:
                raise ValueError(raw)
            return tuple(dict.fromkeys(chosen))

        return self._parse(name, default, convert,
                           "a comma-separated list of " + ", ".join(known)
                           + ' ("none" is never accepted)')

    def public_key(self, name: str) -> str:
        """PEM text (literal \\n sequences allowed) or the path of a PEM file."""
        raw = self.env.get(name, "").strip()
        if not raw:
            return ""
        if raw.startswith("-----BEGIN"):
            return raw.replace("\\n", "\n") if "\n" not in raw else raw
        try:
            with open(raw, encoding="ascii") as handle:
                text = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(f"{name}={raw!r}: expected PEM text or a readable PEM "
                                 f"file ({exc})")
            return ""
        if not text.startswith("-----BEGIN"):
            self.problems.append(f"{name}={raw!r}: the file holds no PEM public key")
            return ""
        return text
