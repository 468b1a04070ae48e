"""Redis clients and key names, and the one place where redis-py's errors are translated.

Clients are created lazily, in the process that uses them (after gunicorn's fork).
"""

from __future__ import annotations

import functools
import logging
import select
import time
from urllib.parse import unquote, urlsplit

import gevent.monkey
import hiredis
import redis
from redis._parsers.encoders import Encoder
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import Script
from redis.connection import HiredisRespSerializer, PythonRespSerializer
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from ..errors import StoreUnavailableError
from ..settings import Settings

log = logging.getLogger(__name__)

# Replies that mean "this node cannot serve you right now", raised by redis-py as
# ResponseError rather than ConnectionError.
_TRANSIENT_REPLIES = ("UNBLOCKED", "CLUSTERDOWN", "LOADING", "READONLY", "MASTERDOWN",
                      "TRYAGAIN", "NOREPLICAS")


# How Redis refuses a write at its maxmemory (from a script on 6.2, wrapped in the
# script's error rather than raised as OutOfMemoryError).
_OOM_REPLY = "OOM command not allowed"

# A script given a deadline refuses to write this long before it: time for its reply to
# reach a caller that gives up at the deadline, and for the hosts' clocks to disagree.
DEADLINE_MARGIN_SECONDS = 0.5


def deadline_ms(deadline: float | None) -> int:
    """A deadline (``time.time()`` seconds) as scripts check it against Redis's clock:
    Unix ms, early by DEADLINE_MARGIN_SECONDS; 0 for none."""
    if deadline is None:
        return 0
    return int((deadline - DEADLINE_MARGIN_SECONDS) * 1000)


# Redis's own words for a failure go to the log, at most once per this many seconds (an
# outage fails every call of every request).
FAILURE_LOG_SECONDS = 10.0
_failure_log = {"at": 0.0, "suppressed": 0}


def _log_failure(exc: Exception) -> None:
    now = time.monotonic()
    if now - _failure_log["at"] < FAILURE_LOG_SECONDS:
        _failure_log["suppressed"] += 1
        return
    suppressed, _failure_log["suppressed"], _failure_log["at"] = _failure_log["suppressed"], 0, now
    log.warning("Redis call failed: %s: %s%s", type(exc).__name__, exc,
                f" ({suppressed} more failures since the last report)" if suppressed else "")


def translate_errors(func):
    """Turn redis-py's failures into StoreUnavailableError (503)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except redis.TimeoutError as exc:
            # Clients see what happened, never Redis's own text: it names hosts and ports.
            _log_failure(exc)
            raise StoreUnavailableError("Redis did not answer in time.", retry_after=2) from exc
        except redis.ConnectionError as exc:
            _log_failure(exc)
            raise StoreUnavailableError("Redis cannot be reached.", retry_after=2) from exc
        except redis.ResponseError as exc:
            if isinstance(exc, redis.OutOfMemoryError) or _OOM_REPLY in str(exc):
                # maxmemory reached with a no-eviction policy. Redis refuses a script
                # that way only at its first write (7.x: before it runs), so nothing
                # of it was written.
                raise StoreUnavailableError(
                    "Redis is out of memory (its maxmemory); nothing was written.",
                    retry_after=5, details={"written": False}) from exc
            if str(exc).split(" ", 1)[0] in _TRANSIENT_REPLIES:
                _log_failure(exc)
                raise StoreUnavailableError(
                    f"Redis cannot serve right now ({str(exc).split(' ', 1)[0]}).",
                    retry_after=2) from exc
            raise

    return wrapper


class CommandPacker:
    """Packs commands for Redis with hiredis, which encodes str (UTF-8), bytes and int
    itself. redis-py's own packer checks and encodes every argument in Python first:
    about 0.7 µs per message of a 500-message publish, more than hiredis takes for the
    whole command. A command with any other argument (a float, a memoryview, a bool
    that redis-py refuses) is packed by redis-py's packer, with its exact encoding and
    errors."""

    _PLAIN = frozenset({str, bytes, int})

    def __init__(self) -> None:
        encode = Encoder("utf-8", "strict", False).encode
        self._fallback = HiredisRespSerializer(PythonRespSerializer(6000, encode).pack,
                                               encode)

    def pack(self, *args) -> list[bytes]:
        if not self._PLAIN.issuperset(map(type, args)):
            return self._fallback.pack(*args)
        command = args[0]
        # A command of several words ("SCRIPT LOAD") is sent as several arguments.
        if (" " if isinstance(command, str) else b" ") in command:
            args = (*command.split(), *args[1:])
        return [hiredis.pack_command(args)]


# select.poll as the operating system has it: gevent's asks the event loop, and so waits
# behind everything the loop has queued, even with a timeout of 0.
_poll_now = gevent.monkey.get_original("select", "poll")


class _ReadinessWithoutWaiting:
    """A connection whose check for stray data (made before every command a pool hands
    out) asks the socket directly instead of gevent's loop. Through gevent the check
    yielded to the loop: behind the wake-ups of thousands of streams that cost a publish
    20 ms before its command was even sent."""

    def can_read(self, timeout: float = 0) -> bool:
        sock = self._sock
        reader = getattr(self._parser, "_reader", None)  # hiredis's buffer of replies
        if (timeout == 0 and sock is not None and reader is not None
                and not reader.has_data() and not _decrypted_pending(sock)):
            poller = _poll_now()
            try:
                poller.register(sock.fileno(), select.POLLIN)
                if not poller.poll(0):
                    return False
            except ValueError:  # closed meanwhile: redis-py says so below
                pass
        # Data, a closed socket, or a wait: redis-py tells which.
        return super().can_read(timeout)


def _decrypted_pending(sock) -> bool:
    """Whether a TLS socket holds decrypted bytes, which polling the socket cannot see."""
    pending = getattr(sock, "pending", None)
    return pending is not None and pending() > 0


_checking_without_waiting: dict[type, type] = {}


def _check_without_waiting(pool: redis.ConnectionPool) -> redis.ConnectionPool:
    """``pool``, making connections of its class (plain, TLS, Unix socket, Sentinel's)
    with the readiness check above."""
    base = pool.connection_class
    if base not in _checking_without_waiting:
        _checking_without_waiting[base] = type(base.__name__, (_ReadinessWithoutWaiting, base),
                                               {})
    pool.connection_class = _checking_without_waiting[base]
    return pool


class Keys:
    """Every Redis key name. One hash tag, so multi-key scripts work on a cluster too."""

    def __init__(self, prefix: str) -> None:
        tag = "{" + prefix + "}"
        self.stream = f"{tag}:stream"
        self.epoch = f"{tag}:epoch"
        self.message_prefix = f"{tag}:ids:"
        self.stream_bytes = f"{tag}:stream:bytes"
        self.request_prefix = f"{tag}:req:"
        self.connection_prefix = f"{tag}:conn:"
        self.connections = f"{tag}:conns"
        self.user_prefix = f"{tag}:user-conns:"
        self.worker_prefix = f"{tag}:worker:"
        self.workers = f"{tag}:workers"
        self.instance_prefix = f"{tag}:instance:"
        self.instances = f"{tag}:instances"
        self.leader_prefix = f"{tag}:leader:"
        self.stats = f"{tag}:stats"
        self.control = f"{tag}:control"
        self.rate_prefix = f"{tag}:rate:"

    def connection(self, connection_id: str) -> str:
        return self.connection_prefix + connection_id

    def user(self, user: str) -> str:
        return self.user_prefix + user

    def worker(self, worker_id: str) -> str:
        return self.worker_prefix + worker_id

    def instance(self, name: str) -> str:
        return self.instance_prefix + name


class _SentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """A bounded, blocking pool (as without Sentinel: a caller waits for a free connection
    instead of failing) whose connections go wherever Sentinel says the primary is now.
    A connection that meets a demoted primary (READONLY) is dropped and the call retried
    on the new one."""


def _database_and_password(url: str) -> dict[str, object]:
    """What REDIS_URL still says when Sentinel finds the primary: the database and the
    password."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/")
    return {"db": int(database) if database.isdigit() else 0,
            "password": unquote(parts.password) if parts.password else None}


class RedisConnections:
    """The clients one process needs: commands, the blocking reader, health probes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._command: redis.Redis | None = None
        self._scripts: dict[str, Script] = {}
        self._probe: redis.Redis | None = None
        self._sentinels: Sentinel | None = None

    @property
    def command(self) -> redis.Redis:
        """The shared command client: a bounded pool; no call waits on Redis (or for a
        pooled connection) longer than REQUEST_TIMEOUT_SECONDS, and only a dropped
        connection is retried (once, at once: every write it carries is idempotent)."""
        if self._command is None:
            self._command = self._make(socket_timeout=self.settings.request_timeout_seconds,
                                       retries=1, retry_timeouts=False)
        return self._command

    @property
    def probe(self) -> redis.Redis:
        """A fail-fast client for health checks: one second, no retries."""
        if self._probe is None:
            self._probe = self._make(socket_timeout=1.0, retries=0, max_connections=4)
        return self._probe

    def reader(self) -> redis.Redis:
        """A dedicated client for blocking XREAD: its socket timeout outlasts the BLOCK
        time, and it does not retry by itself (the reader loop owns retrying)."""
        block_seconds = self.settings.reader_block_ms / 1000
        client = self._make(socket_timeout=block_seconds + 10.0, retries=0, max_connections=1)
        # XREAD replies as Redis sends them: the reader parses every entry itself, more
        # cheaply than redis-py's dict per entry.
        client.set_response_callback("XREAD", lambda response, **options: response)
        return client

    def subscriber(self) -> redis.Redis:
        """A client for a Pub/Sub subscription (no read timeout: it waits for messages)."""
        return self._make(socket_timeout=None, retries=0, max_connections=2)

    def _make(self, socket_timeout: float | None, retries: int,
              max_connections: int = 64, retry_timeouts: bool = True) -> redis.Redis:
        errors = (redis.ConnectionError, redis.TimeoutError) if retry_timeouts else (
            redis.ConnectionError,)
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries,
                      supported_errors=errors)
        options = {"max_connections": max_connections, "timeout": socket_timeout or 5.0,
                   "socket_timeout": socket_timeout, "socket_connect_timeout": 3.0,
                   "health_check_interval": 30, "retry": retry,
                   "command_packer": CommandPacker()}
        if self.settings.redis_sentinels:
            pool = _SentinelPool(self.settings.redis_sentinel_master, self._sentinel(),
                                 **_database_and_password(self.settings.redis_url), **options)
        else:
            pool = redis.BlockingConnectionPool.from_url(self.settings.redis_url, **options)
        return redis.Redis(connection_pool=_check_without_waiting(pool))

    def _sentinel(self) -> Sentinel:
        """The Sentinel manager the pools ask where the primary is (one per process)."""
        if self._sentinels is None:
            addresses = [(host, int(port)) for host, _, port in
                         (item.rpartition(":") for item in self.settings.redis_sentinels)]
            self._sentinels = Sentinel(addresses, sentinel_kwargs={
                "socket_timeout": 1.0, "socket_connect_timeout": 1.0,
                "password": self.settings.redis_sentinel_password or None})
        return self._sentinels

    def script(self, source: str) -> Script:
        """The Lua ``source``, registered once on the command client (redis-py runs it
        by its SHA and loads it again when Redis has forgotten it)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.command.register_script(source)
        return script

    def close(self) -> None:
        for client in (self._command, self._probe):
            if client is not None:
                client.close()
        self._command = self._probe = None
        self._scripts = {}
