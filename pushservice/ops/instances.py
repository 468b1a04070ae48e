"""Service registration: this instance in Redis, and with the gateway when one is set.

One worker per instance leads (a lease in Redis) and keeps the registration alive: the
instance's record in Redis (listed by ``GET /admin/instances``) and, with GATEWAY_URL,
an HTTP registration that it renews every GATEWAY_RENEW_SECONDS. Failures are retried
with backoff in the background; they never delay start-up or serving. The master
deregisters the instance when it shuts down.

Gateway protocol (JSON over HTTP, ``Authorization: Bearer GATEWAY_TOKEN`` when set):
``PUT {GATEWAY_URL}/services/{SERVICE_NAME}/instances/{INSTANCE_NAME}`` with the
instance record registers or renews; ``DELETE`` on the same URL deregisters.
"""

from __future__ import annotations

import logging
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

import orjson

from .. import __version__
from ..background import Loop, retry_backoff
from ..errors import StoreUnavailableError
from ..settings import Settings
from ..store import DeploymentRecords
from .registry import worker_id

log = logging.getLogger(__name__)

GATEWAY_TIMEOUT_SECONDS = 3.0


class GatewayError(Exception):
    """The gateway did not accept a registration request."""


def advertised_host(settings: Settings) -> str:
    """The address other services reach this instance at: ADVERTISE_HOST, or this
    host's address as its name resolves."""
    if settings.advertise_host:
        return settings.advertise_host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def instance_record(settings: Settings, started_at: float) -> dict[str, Any]:
    host = advertised_host(settings)
    return {
        "service": settings.service_name,
        "instance": settings.instance_name,
        "address": host,
        "port": settings.service_port,
        "health_url": f"http://{host}:{settings.service_port}/health",
        "version": __version__,
        "workers": settings.workers,
        "started_at": started_at,
        "ttl_seconds": settings.registry_ttl_seconds,
    }


class Gateway:
    """The gateway's registration API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = (f"{settings.gateway_url}/services/{quote(settings.service_name)}"
                    f"/instances/{quote(settings.instance_name)}")

    def register(self, record: dict[str, Any]) -> None:
        self._call("PUT", orjson.dumps(record))

    def deregister(self) -> None:
        self._call("DELETE", None)

    def _call(self, method: str, body: bytes | None) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": f"pushservice/{__version__}"}
        if self.settings.gateway_token:
            headers["Authorization"] = f"Bearer {self.settings.gateway_token}"
        request = urllib.request.Request(self.url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=GATEWAY_TIMEOUT_SECONDS) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if method == "DELETE" and exc.code == 404:
                return  # already gone
            raise GatewayError(f"{method} {self.url}: HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise GatewayError(f"{method} {self.url}: {exc}") from exc


class InstanceRegistration:
    """Keeps this instance registered while a worker of it leads."""

    def __init__(self, settings: Settings, deployment: DeploymentRecords) -> None:
        self.settings = settings
        self.deployment = deployment
        self.gateway = Gateway(settings) if settings.gateway_url else None
        self.started_at = time.time()
        self.leading = False
        self._loop = Loop(self._round, "instance registration", on_failure=self._lost_redis)
        # The gateway is retried on its own, slower schedule (it is not Redis).
        self._gateway_backoff = retry_backoff(base=1.0, cap=60.0)
        self._gateway_failures = 0
        self._next_gateway_attempt = 0.0

    @property
    def holder(self) -> str:
        return worker_id(self.settings)

    @property
    def _role(self) -> str:
        return "instance:" + self.settings.instance_name

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        """Stop renewing; hand the lease to another worker of this instance."""
        self._loop.stop()
        if self.leading:
            try:
                self.deployment.resign(self._role, self.holder)
            except StoreUnavailableError:
                pass
            self.leading = False

    def _lost_redis(self, error: Exception) -> None:
        self.leading = False  # the lease may pass to another worker meanwhile

    def _round(self) -> float:
        """One round: lead (or not), renew the record, register with the gateway when due.
        Returns the pause until the next round."""
        ttl = self.settings.registry_ttl_seconds
        interval = self.settings.registry_refresh_seconds
        self.leading = self.deployment.lead(self._role, self.holder, ttl)
        if not self.leading:
            return interval
        record = instance_record(self.settings, self.started_at)
        self.deployment.put_instance(self.settings.instance_name, record, ttl)
        if self.gateway is None:
            return interval
        if time.monotonic() >= self._next_gateway_attempt:
            try:
                self.gateway.register(record)
                self._gateway_failures = 0
                self._next_gateway_attempt = (time.monotonic()
                                              + self.settings.gateway_renew_seconds)
            except GatewayError as exc:
                delay = max(0.5, self._gateway_backoff.compute(self._gateway_failures))
                self._gateway_failures += 1
                log.warning("gateway registration failed (retrying in %.1fs): %s", delay, exc)
                self._next_gateway_attempt = time.monotonic() + delay
        return min(interval, max(0.05, self._next_gateway_attempt - time.monotonic()))


def deregister_instance(settings: Settings) -> None:
    """Remove this instance from Redis and from the gateway (the master, at exit).

    Best effort and quick: anything left behind expires within REGISTRY_TTL_SECONDS
    (Redis) or the gateway's own TTL."""
    from ..store import Keys, RedisConnections

    connections = RedisConnections(settings)
    try:
        DeploymentRecords(connections, Keys(settings.stream_key_prefix)).remove_instance(
            settings.instance_name)
    except StoreUnavailableError as exc:
        log.warning("could not remove the instance from Redis: %s", exc)
    finally:
        connections.close()
    if settings.gateway_url:
        try:
            Gateway(settings).deregister()
        except GatewayError as exc:
            log.warning("gateway deregistration failed: %s", exc)
