"""A local Redis Cluster for tests and the scale-out bench: N primaries on free ports.

Started from the embedded valkey-server binary (``find_server_binary``) with
``--cluster-enabled yes``; the slots are split evenly with ``CLUSTER ADDSLOTSRANGE`` and
the nodes joined with ``CLUSTER MEET``, so no redis-cli is needed. Each node runs in its
own directory (its nodes.conf), without persistence, and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

try:
    from servers import free_port, stop_process
except ImportError:  # imported as tests.cluster (the bench)
    from tests.servers import free_port, stop_process

SLOTS = 16384


@dataclass
class ClusterNode:
    port: int
    bus_port: int  # not port + 10000: the free ports may be above 55535
    proc: subprocess.Popen[Any]
    tls_port: int = 0  # what ``{tls_port}`` in the extra options was set to

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    @property
    def node_id(self) -> str:
        with self.client() as c:
            return str(c.execute_command("CLUSTER", "MYID").decode())

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class LocalCluster:
    """The running nodes; ``url`` is the ``redis+cluster://`` URL of all of them."""

    nodes: list[ClusterNode] = field(default_factory=list)
    replicas: list[ClusterNode] = field(default_factory=list)  # also in nodes

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + "/"

    def owner(self, slot: int) -> ClusterNode:
        """The primary serving ``slot`` (as the first running node sees it)."""
        alive = next(n for n in self.nodes if n.proc.poll() is None)
        with alive.client() as c:
            for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        raise LookupError(slot)

    def stop(self) -> None:
        for node in self.nodes:
            stop_process(node.proc)


def _start_node(binary: str, workdir: Path, extra: tuple[str, ...]) -> ClusterNode:
    port, bus_port, tls_port = free_port(), free_port(), free_port()
    home = workdir / str(port)
    home.mkdir(parents=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
         "--cluster-port", str(bus_port),
         "--cluster-node-timeout", "5000", "--repl-diskless-sync-delay", "0",
         "--dir", str(home),
         *(option.format(tls_port=tls_port) for option in extra)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home)
    return ClusterNode(port, bus_port, proc, tls_port)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (redis.ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster: {what} not within {timeout}s")
        time.sleep(0.05)


def _state_ok(node: ClusterNode, size: int) -> bool:
    with node.client() as c:
        info = c.execute_command("CLUSTER", "INFO").decode()
    fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and int(fields["cluster_known_nodes"]) == size


def start_cluster(workdir: Path, primaries: int = 3, *extra: str,
                  binary: str | None = None, replicas: int = 0,
                  timeout: float = 30.0) -> LocalCluster:
    """Start ``primaries`` nodes, give each an even share of the slots, join them and wait
    until every node says ``cluster_state:ok``. ``extra``: more server options, where
    ``{tls_port}`` is a free port of the node's own (for ``--tls-port``). ``replicas``: that
    many more nodes, the i-th a replica of the i-th primary (``cluster.replicas``)."""
    from tidings.engine.embedded import find_server_binary

    binary = binary or find_server_binary()
    cluster = LocalCluster()
    try:
        for _ in range(primaries + replicas):
            cluster.nodes.append(_start_node(binary, workdir, extra))
        for node in cluster.nodes:
            _wait(lambda n=node: n.client().ping(), 10, f"node {node.port} answering")
        share = SLOTS // primaries
        for i, node in enumerate(cluster.nodes[:primaries]):
            start, end = i * share, SLOTS - 1 if i == primaries - 1 else (i + 1) * share - 1
            with node.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", start, end)
        with cluster.nodes[0].client() as c:
            for other in cluster.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port, other.bus_port)
        size = len(cluster.nodes)
        for node in cluster.nodes:
            _wait(lambda n=node: _known(n) == size, timeout, f"node {node.port} meeting")
        for i, replica in enumerate(cluster.nodes[primaries:]):
            with replica.client() as c:
                c.execute_command("CLUSTER", "REPLICATE", cluster.nodes[i].node_id)
            cluster.replicas.append(replica)
        for node in cluster.nodes:
            _wait(lambda n=node: _state_ok(n, size), timeout, f"node {node.port} ok")
        for primary in cluster.nodes[:replicas]:  # the replica is linked and in sync
            _wait(lambda n=primary: _replica_online(n), timeout,
                  f"replica of {primary.port} online")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _replica_online(node: ClusterNode) -> bool:
    with node.client() as c:
        return bool(c.info("replication").get("slave0", {}).get("state") == "online")


def _known(node: ClusterNode) -> int:
    with node.client() as c:
        info = c.execute_command("CLUSTER", "INFO").decode()
    return int(dict(line.split(":", 1) for line in info.split() if ":" in line)[
        "cluster_known_nodes"])


@contextlib.contextmanager
def running_cluster(workdir: Path, primaries: int = 3, *extra: str,
                    binary: str | None = None, replicas: int = 0) -> Iterator[LocalCluster]:
    cluster = start_cluster(workdir, primaries, *extra, binary=binary, replicas=replicas)
    try:
        yield cluster
    finally:
        cluster.stop()


def move_slot(cluster: LocalCluster, slot: int, target: ClusterNode,
              batch: int = 100, pause: float = 0.0) -> None:
    """Reshard ``slot`` to ``target`` the way redis-cli does: IMPORTING / MIGRATING, MIGRATE
    the keys in batches (``pause`` seconds apart: a slow move), then SETSLOT NODE on both
    ends and the others."""
    source = cluster.owner(slot)
    if source is target:
        return
    source_id, target_id = source.node_id, target.node_id
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
                                "REPLACE", "KEYS", *keys)
            time.sleep(pause)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    for node in cluster.nodes:
        if node is not source and node is not target:
            with node.client() as c:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
