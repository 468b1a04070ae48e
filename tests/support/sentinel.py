"""A Redis managed by Sentinel, with real processes on loopback: one primary, replicas and
sentinels (the ``redis-server`` binary run with ``--sentinel``), for failover tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Self

import redis

from .ports import free_port
from .processes import stop_process
from .redis_server import RedisServer
from .waiting import wait_until

MASTER_NAME = "mymaster"


class SentinelCluster:
    """``replicas`` replicas of one primary, watched by ``sentinels`` sentinels (quorum:
    a majority) that call the primary down after ``down_after_ms``."""

    def __init__(self, binary: str, replicas: int = 2, sentinels: int = 3,
                 down_after_ms: int = 1000) -> None:
        self.binary = binary
        self.primary = RedisServer(binary=binary)
        self.replicas = [RedisServer(binary=binary) for _ in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.down_after_ms = down_after_ms
        self.directory = Path(tempfile.mkdtemp(prefix="pushservice-sentinel-"))
        self._sentinels: list[subprocess.Popen] = []

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for the service."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelCluster:
        # Every server may become the primary: none waits to gather replicas before a sync.
        for server in [self.primary, *self.replicas]:
            server.extra_args = ("--repl-diskless-sync-delay", "0")
        self.primary.start()
        for replica in self.replicas:
            replica.extra_args += ("--replicaof", "127.0.0.1", str(self.primary.port))
            replica.start()
        wait_until(lambda: all(self._info(replica, "master_link_status") == "up"
                               for replica in self.replicas), 15,
                   message="the replicas to be in sync")
        quorum = len(self.sentinel_ports) // 2 + 1
        for index, port in enumerate(self.sentinel_ports):
            config = self.directory / f"sentinel-{index}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
                f"dir {self.directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            log = open(self.directory / f"sentinel-{index}.log", "wb")  # noqa: SIM115
            self._sentinels.append(subprocess.Popen(
                [self.binary, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.directory))
            log.close()
        wait_until(lambda: all(self.master_port(port) == self.primary.port
                               for port in self.sentinel_ports), 15,
                   message="every sentinel to know the primary")
        return self

    def master_port(self, sentinel_port: int) -> int | None:
        """The primary's port as one sentinel sees it."""
        try:
            client = redis.Redis(port=sentinel_port, socket_timeout=1)
            address = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
            return int(address[1])
        except (redis.RedisError, TypeError, ValueError):
            return None

    def current_primary(self) -> RedisServer | None:
        """The server the sentinels now name as primary."""
        port = self.master_port(self.sentinel_ports[0])
        return next((server for server in [self.primary, *self.replicas]
                     if server.port == port), None)

    def wait_for_failover(self, timeout: float = 30.0) -> RedisServer:
        """After the primary died: the replica the sentinels promoted, once it serves."""
        old = self.primary.port

        def promoted():
            server = self.current_primary()
            if server is None or server.port == old:
                return None
            return server if self._info(server, "role") == "master" else None

        return wait_until(promoted, timeout, message="a replica to be promoted")

    @staticmethod
    def _info(server: RedisServer, field: str) -> str | None:
        try:
            with server.client(socket_timeout=1) as client:
                return str(client.info("replication").get(field))
        except redis.RedisError:
            return None

    def close(self) -> None:
        for process in self._sentinels:
            stop_process(process, 5)
        for server in [self.primary, *self.replicas]:
            server.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
