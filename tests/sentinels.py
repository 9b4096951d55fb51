"""A real Sentinel deployment for failover tests: one primary, replicas, three sentinels.

Every process is ``redis-server`` (``--sentinel`` for the sentinels, with a generated
config file) on free ports of 127.0.0.1, without persistence, and is stopped by its PID.
Down detection and failover are shortened (``down-after-milliseconds``,
``failover-timeout``) so a failover takes seconds, not the default half minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from servers import free_port, stop_process
from tidings.engine.embedded import find_server_binary

MASTER = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def redis_server() -> str:
    """redis-server on PATH (Redis 7.0 here), else the embedded default's valkey-server:
    both run as a sentinel with ``--sentinel``. TIDINGS_TEST_SENTINEL_SERVER overrides."""
    return (os.environ.get("TIDINGS_TEST_SENTINEL_SERVER") or shutil.which("redis-server")
            or find_server_binary())


@dataclass(frozen=True)
class Tls:
    """Server certificate, key and CA of a TLS deployment (tests/certs.py makes them)."""

    cert: Path
    key: Path
    ca: Path

    def server_args(self) -> list[str]:
        return ["--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key),
                "--tls-ca-cert-file", str(self.ca), "--tls-replication", "yes",
                "--tls-auth-clients", "no"]


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[Any]
    password: str | None = None
    tls: Tls | None = None

    def client(self) -> redis.Redis:
        secure: dict[str, Any] = ({"ssl": True, "ssl_ca_certs": str(self.tls.ca)}
                                  if self.tls else {})
        return redis.Redis(port=self.port, socket_timeout=2, password=self.password, **secure)


@dataclass
class SentinelDeployment:
    """The processes of one deployment; :meth:`stop` ends every one of them by PID."""

    workdir: Path
    sentinel_password: str | None = None  # requirepass of the sentinels (and between them)
    min_replicas: int = 0  # min-replicas-to-write of every data server (max lag 2 s)
    tls: Tls | None = None  # every server and sentinel on TLS only (rediss+sentinel://)
    sentinel_tls: Tls | None = None  # the sentinels' own certificate, if not ``tls``
    data: list[Node] = field(default_factory=list)  # data[0] is the first primary
    sentinels: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"{'rediss' if self.tls else 'redis'}+sentinel://{hosts}/{MASTER}/0"

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[Any]:
        with (self.workdir / f"{name}.log").open("wb") as log:  # the child keeps its copy
            return subprocess.Popen([redis_server(), *args], cwd=self.workdir, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_data(self, replica_of: int | None = None) -> Node:
        port = free_port()
        ports = (["--port", "0", "--tls-port", str(port), *self.tls.server_args()] if self.tls
                 else ["--port", str(port)])
        args = [*ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
                "--dir", str(self.workdir)]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        if self.min_replicas:
            args += ["--min-replicas-to-write", str(self.min_replicas),
                     "--min-replicas-max-lag", "2"]
        node = Node(port, self._start(f"data-{port}", args), tls=self.tls)
        self.data.append(node)
        _wait_ping(node)
        return node

    def start_sentinel(self, primary: int) -> Node:
        port = free_port()
        conf = self.workdir / f"sentinel-{port}.conf"
        ports = f"port {port}\n"
        tls = self.sentinel_tls or self.tls
        if tls:
            ports = f"port 0\ntls-port {port}\n" + "".join(
                f"{tls.server_args()[i][2:]} {tls.server_args()[i + 1]}\n"
                for i in range(0, len(tls.server_args()), 2))
        conf.write_text(
            f"{ports}bind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER} 2\n")
        if self.sentinel_password:
            with conf.open("a") as file:
                file.write(f"requirepass {self.sentinel_password}\n"
                           f"sentinel sentinel-pass {self.sentinel_password}\n")
        node = Node(port, self._start(f"sentinel-{port}", [str(conf), "--sentinel"]),
                    self.sentinel_password, tls)
        self.sentinels.append(node)
        _wait_ping(node)
        return node

    def primary_port(self) -> int:
        """The primary's port, as the first sentinel reports it."""
        with self.sentinels[0].client() as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def wait_ready(self, replicas: int, timeout: float = 30.0) -> None:
        """Until every sentinel knows the others and the replicas are in sync."""
        deadline = time.monotonic() + timeout
        while True:
            if self._ready(replicas):
                return
            if time.monotonic() > deadline:
                raise AssertionError("the sentinel deployment did not come up:\n" + self.logs())
            time.sleep(0.1)

    def _ready(self, replicas: int) -> bool:
        try:
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    state = client.sentinel_master(MASTER)
                if (int(state["num-other-sentinels"]) < len(self.sentinels) - 1
                        or int(state["num-slaves"]) < replicas):
                    return False
            with self.data[0].client() as primary:
                return int(primary.info("replication")["connected_slaves"]) >= replicas
        except (redis.RedisError, OSError, KeyError):
            return False

    def node(self, port: int) -> Node:
        return next(n for n in self.data if n.port == port)

    def logs(self, tail: int = 15) -> str:
        out = []
        for path in sorted(self.workdir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {path.name} ---\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.data]:
            stop_process(node.proc)


def _wait_ping(node: Node, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if node.proc.poll() is not None:
            raise RuntimeError(f"redis-server on {node.port} exited with {node.proc.returncode}")
        try:
            with node.client() as client:
                client.ping()
            return
        except (redis.ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_deployment(workdir: Path, replicas: int = 2, sentinels: int = 3,
                     sentinel_password: str | None = None,
                     min_replicas: int = 0, tls: Tls | None = None,
                     sentinel_tls: Tls | None = None) -> SentinelDeployment:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels, all in sync."""
    deployment = SentinelDeployment(workdir, sentinel_password, min_replicas=min_replicas,
                                    tls=tls, sentinel_tls=sentinel_tls)
    try:
        primary = deployment.start_data()
        for _ in range(replicas):
            deployment.start_data(replica_of=primary.port)
        for _ in range(sentinels):
            deployment.start_sentinel(primary.port)
        deployment.wait_ready(replicas)
    except BaseException:
        deployment.stop()
        raise
    return deployment
