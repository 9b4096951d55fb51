"""Redis Sentinel: the URL, discovery through redis-py, and a kill -9 of the primary.

The deployment is real: a primary, two replicas and three sentinels, all ``redis-server``
processes started here (see sentinels.py) and stopped by PID. The failover test also runs
real ``tidings worker`` processes that record what they processed on a separate server
(the ledger), which the failover does not touch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.sentinel import SentinelManagedConnection
from redis.exceptions import ReadOnlyError

from conftest import new_prefix, tidings, with_app
from fault_helpers import text
from sentinels import MASTER, SentinelDeployment, start_deployment
from tidings import BrokerUnavailableError, DurabilityError, Tidings
from tidings.core.errors import AuthenticationFailedError, ConfigError
from tidings.core.sentinel import parse_sentinel_url
from tidings.engine.channel import Channel

# Starts its own servers: the CI pass against another Redis would repeat it as is.
pytestmark = pytest.mark.own_servers


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[SentinelDeployment]:
    workdir = tmp_path / "sentinel"
    workdir.mkdir()
    started = start_deployment(workdir)
    try:
        yield started
    finally:
        started.stop()


# -- the URL -------------------------------------------------------------------------------


def test_sentinel_url_gives_sentinels_master_db_and_both_credentials() -> None:
    target = parse_sentinel_url("redis+sentinel://app:p%40ss@10.0.0.1:26380,h2,[::1]:26381"
                                "/mymaster/3?sentinel_password=s3cret")
    assert target.sentinels == (("10.0.0.1", 26380), ("h2", 26379), ("::1", 26381))
    assert (target.service, target.db) == ("mymaster", 3)
    assert (target.username, target.password) == ("app", "p@ss")
    assert target.sentinel_password == "s3cret" and target.sentinel_username is None
    assert "s3cret" not in repr(target) and "p@ss" not in repr(target)


@pytest.mark.parametrize(("url", "reason"), [
    ("redis+sentinel://h1:26379", "master name is missing"),
    ("redis+sentinel://h1:26379/", "master name is missing"),
    ("redis+sentinel://h1:26379,,h2/m", "address is empty"),
    ("redis+sentinel://h1:port/m", "is not 1-65535"),
    ("redis+sentinel://h1:0/m", "is not 1-65535"),
    ("redis+sentinel://h1/m/zero", "not a database number"),
    ("redis+sentinel://h1/m/0/extra", "the path is"),
    ("redis+sentinel://h1/m?password=x", "unknown option 'password'"),
    ("redis+sentinel://:s3cret@:26379/m", "has no host"),
])
def test_malformed_sentinel_url_is_a_config_error_naming_the_setting(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, reason: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Tidings(url)
    assert info.value.field == "TIDINGS_REDIS_URL"
    assert reason in info.value.reason
    assert "s3cret" not in str(info.value)


# -- discovery -----------------------------------------------------------------------------


async def test_app_publishes_and_consumes_on_the_primary_the_sentinels_name(
        deployment: SentinelDeployment) -> None:
    app = Tidings(deployment.url, key_prefix=new_prefix())
    q = app.queue("ha", durability="replicated")
    got: list[Any] = []
    done = asyncio.Event()

    @q.handler()
    async def handle(msg: Any) -> None:
        got.append(msg.payload)
        if len(got) == 3:
            done.set()

    try:
        await app.connect()
        for i in range(3):
            await q.publish({"i": i})  # WAIT 1: two replicas are there to confirm
        connection = app.broker.channel._connection
        assert isinstance(connection, SentinelManagedConnection)  # the pool's own class
        assert connection.port == deployment.primary_port() == deployment.data[0].port
        async with app.worker(), asyncio.timeout(20):
            await done.wait()
        assert sorted(p["i"] for p in got) == [0, 1, 2]
    finally:
        await app.close()


async def test_channel_on_a_replica_drops_its_connection_on_readonly(
        deployment: SentinelDeployment) -> None:
    replica = Redis(port=deployment.data[1].port)
    channel = Channel(replica.connection_pool, timeout=5.0)
    try:
        first = await channel.execute_command("CLIENT", "ID")
        with pytest.raises(ReadOnlyError):
            await channel.execute_command("SET", f"{new_prefix()}:k", "v")
        # The connection was given up, so the next call opens a new one (through a
        # SentinelConnectionPool: asks the sentinels again, and finds the new primary).
        assert await channel.execute_command("CLIENT", "ID") != first
    finally:
        await channel.aclose()
        await replica.aclose()


def test_cli_publishes_and_lists_queues_through_the_sentinels(
        deployment: SentinelDeployment) -> None:
    env = {"TIDINGS_REDIS_URL": deployment.url, "TIDINGS_KEY_PREFIX": new_prefix()}
    with_app(env, _connected, "email")  # the app declares the queue, so the CLI knows it
    msg_id = tidings(env, "publish", "email", '{"to": "a@b.c"}').stdout.strip()
    [email] = [q for q in orjson.loads(tidings(env, "queues", "--json").stdout)
               if q["name"] == "email"]
    assert email["lanes"]["normal"] == 1
    info = orjson.loads(tidings(env, "inspect", msg_id, "--json").stdout)
    assert info["state"] == "queued" and info["payload"] == {"to": "a@b.c"}


async def _connected(app: Tidings) -> None:
    return None


async def test_sentinels_with_a_password_are_asked_with_sentinel_password(
        tmp_path: Path) -> None:
    deployment = start_deployment(tmp_path, replicas=1, sentinel_password="s3ntinel")
    hosts = deployment.url.removeprefix("redis+sentinel://")
    refused = Tidings(f"redis+sentinel://{hosts}", key_prefix=new_prefix(), connect_retries=0)
    app = Tidings(f"redis+sentinel://{hosts}?sentinel_password=s3ntinel",
                  key_prefix=new_prefix())
    try:
        with pytest.raises(AuthenticationFailedError) as refusal:  # final: not retried
            await refused.connect()
        assert "sentinel_password" in str(refusal.value) and "s3ntinel" not in str(refusal.value)
        env = {"TIDINGS_REDIS_URL": refused.settings.redis_url or "",
               "TIDINGS_KEY_PREFIX": new_prefix()}
        result = await asyncio.to_thread(tidings, env, "queues", code=4)  # 4: refused
        assert "sentinel_password" in result.output and "Traceback" not in result.output
        await app.connect()
        assert app.broker.channel._connection.port == deployment.data[0].port
    finally:
        await app.close()
        await refused.close()
        deployment.stop()


async def test_publishing_moves_to_the_new_primary_before_the_old_one_is_demoted(
        deployment: SentinelDeployment, report: Callable[[str], None]) -> None:
    # After SENTINEL FAILOVER the old primary keeps its connections and accepts writes
    # until the sentinels demote it (~10 s later), and the promotion discards them. The
    # broker's PrimaryWatch must move publishing as soon as the sentinels name the new
    # primary: while the old one still says it is a primary.
    app = Tidings(deployment.url, key_prefix=new_prefix())
    q = app.queue("ha", durability="replicated")
    old = deployment.primary_port()
    confirmed: list[str] = []
    try:
        await app.connect()
        confirmed.append(await q.publish({"n": 0}))
        with deployment.sentinels[0].client() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
        n = 1
        async with asyncio.timeout(60):
            while _channel_port(app) in (old, None) or deployment.primary_port() == old:
                try:
                    confirmed.append(await q.publish({"n": n}, idempotency_key=f"n{n}"))
                    n += 1
                except (BrokerUnavailableError, DurabilityError):
                    await asyncio.sleep(0.05)  # the switch: the same message again, same key
        confirmed.append(await q.publish({"n": "last"}))
        assert _channel_port(app) == deployment.primary_port() != old
        assert _role(deployment, old) == "master", "moved only when the old one was demoted"
        kept = (await q.stats()).depth
        report(f"manual SENTINEL FAILOVER: {len(set(confirmed))} replicated publishes "
               f"confirmed, {kept} on the new primary, {len(set(confirmed)) - kept} lost "
               "(confirmed by the old primary between the promotion and the announcement)")
    finally:
        await app.close()


def _channel_port(app: Tidings) -> int | None:
    connection = app.broker.channel._connection
    return None if connection is None else int(connection.port)


def _role(deployment: SentinelDeployment, port: int) -> str:
    with deployment.node(port).client() as client:
        return text(client.info("replication")["role"])
