"""Redis Cluster: the URL, queues spread over the shards, the CLI, and resharding under load.

The suite's core scenarios run on a cluster in test_cluster_suite.py; this module tests
what is the cluster's own, against three local primaries (tests/cluster.py).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio.cluster import RedisCluster

from certs import Authority
from cluster import LocalCluster, move_slot, running_cluster
from conftest import drop_prefix, new_prefix, tidings, with_app
from fault_helpers import (
    QUEUE,
    Recording,
    WorkerProcs,
    consumer_of,
    is_settled,
    pending_of,
    poll,
    wait_exit,
)
from tidings import Message, Queue, Tidings
from tidings.core.cluster import parse_cluster_url
from tidings.core.errors import ConfigError, UntrustedCertificateError
from tidings.core.keys import KeySpace
from tidings.engine.cluster import ClusterChannel, slot_of

# Starts its own servers: the CI pass against another Redis would repeat it as is.
pytestmark = pytest.mark.own_servers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(Path(tmp_path_factory.mktemp("cluster"))) as running:
        yield running


@pytest.fixture
async def app(cluster: LocalCluster) -> AsyncIterator[Tidings]:
    app = Tidings(cluster.url, key_prefix=new_prefix())
    yield app
    await drop_prefix(app)
    await app.close()


# -- the URL -------------------------------------------------------------------------------


def test_cluster_url_gives_the_seed_nodes_credentials_and_tls() -> None:
    target = parse_cluster_url("rediss+cluster://app:p%40ss@10.0.0.1:7000,h2,[::1]:7002/")
    assert target.nodes == (("10.0.0.1", 7000), ("h2", 6379), ("::1", 7002))
    assert (target.username, target.password, target.tls) == ("app", "p@ss", True)
    assert "p@ss" not in repr(target)
    assert parse_cluster_url("valkey+cluster://h1:7000").tls is False


@pytest.mark.parametrize(("url", "reason"), [
    ("redis+cluster://h1:7000,,h2/", "address is empty"),
    ("redis+cluster://h1:port/", "is not 1-65535"),
    ("redis+cluster://h1/3", "only database 0"),
    ("redis+cluster://h1/?password=x", "takes no ?options"),
    ("redis+cluster://:s3cret@:7000/", "has no host"),
])
def test_malformed_cluster_url_is_a_config_error_naming_the_setting(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, reason: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Tidings(url)
    assert info.value.field == "TIDINGS_REDIS_URL"
    assert reason in info.value.reason
    assert "s3cret" not in str(info.value)


# -- the key layout ------------------------------------------------------------------------


def test_each_key_family_lives_in_one_slot() -> None:
    """A queue's keys (lanes, delayed set, DLQ, idempotency, campaigns, fair lines, parked
    keys) share its slot, an ordered partition's share the partition's, the schedule store
    and the routing store one slot each; different queues hash apart."""
    space = KeySpace("tdg")
    q = space.queue("email")
    campaign = q.campaign("c1")
    queue_keys = [*q.script_keys, q.idempotency("k"), q.paused_keys, q.parked("k"),
                  q.fair_ready(0), q.fair_line_prefix(1) + "tenant", campaign.record,
                  campaign.pending, campaign.slots]
    assert {slot_of(k) for k in queue_keys} == {slot_of(q.normal)}
    part = space.partition("orders", 3)
    assert {slot_of(k) for k in [*part.script_keys, part.list_key("k")]} == {slot_of(part.owner)}
    schedules, routes = space.schedules, space.routes
    assert len({slot_of(k) for k in (schedules.due, schedules.ids, schedules.record("s"))}) == 1
    assert len({slot_of(k) for k in (routes.version, routes.rules, routes.history,
                                     routes.audit, routes.stats)}) == 1
    assert len({slot_of(space.queue(f"q{i}").normal) for i in range(20)}) == 20


# -- sharding ------------------------------------------------------------------------------


async def test_queues_spread_over_the_shards_each_whole_on_one(
        app: Tidings, cluster: LocalCluster) -> None:
    names = [f"q{i}" for i in range(12)]
    queues = [app.queue(name) for name in names]
    got: Counter[str] = Counter()
    done = asyncio.Event()
    for q in queues:
        @q.handler
        async def handle(msg: Message) -> None:
            got[msg.payload["queue"]] += 1
            if sum(got.values()) == 12 * 20:
                done.set()
    for q in queues:
        await q.publish_many([{"queue": q.name}] * 20)
    owners = {q.name: cluster.owner(slot_of(q.keys.normal)).port for q in queues}
    assert len(set(owners.values())) == 3  # twelve queues land on all three primaries
    for q in queues:  # every key of a queue is on its own slot's primary
        with cluster.owner(slot_of(q.keys.normal)).client() as node:
            assert node.xlen(q.keys.normal) == 20
    async with app.worker():
        await asyncio.wait_for(done.wait(), 20)
    assert got == {name: 20 for name in names}
    assert isinstance(app.broker.channel, ClusterChannel)


def test_cli_publishes_and_lists_queues_on_the_cluster(cluster: LocalCluster) -> None:
    env = {"TIDINGS_REDIS_URL": cluster.url, "TIDINGS_KEY_PREFIX": new_prefix()}
    with_app(env, _declared, "email", "sms")
    msg_id = tidings(env, "publish", "email", '{"to": "a@b.c"}').stdout.strip()
    listed = {q["name"]: q for q in orjson.loads(tidings(env, "queues", "--json").stdout)}
    assert listed["email"]["lanes"]["normal"] == 1 and "sms" in listed
    info = orjson.loads(tidings(env, "inspect", msg_id, "--json").stdout)
    assert info["state"] == "queued" and info["payload"] == {"to": "a@b.c"}
    with_app(env, drop_prefix)


async def _declared(app: Tidings) -> None:
    return None


# -- resharding ----------------------------------------------------------------------------


async def test_queue_keeps_working_while_its_slot_moves_to_another_primary(
        app: Tidings, cluster: LocalCluster) -> None:
    """A producer and a worker run while the queue's slot is migrated (IMPORTING /
    MIGRATING, MIGRATE in batches, SETSLOT NODE): every message is handled, none twice,
    and the producer never has to give up on a publish."""
    total, moved_after = 2000, 300
    q = app.queue("moving")
    handled: Counter[int] = Counter()
    enough, done = asyncio.Event(), asyncio.Event()

    @q.handler
    async def handle(msg: Message) -> None:
        handled[msg.payload] += 1
        if len(handled) >= moved_after:
            enough.set()
        if len(handled) == total:
            done.set()

    slot = slot_of(q.keys.normal)
    source = cluster.owner(slot)
    target = next(n for n in cluster.nodes if n is not source)
    gave_up: list[Exception] = []
    published = [0]

    async def produce() -> None:
        for i in range(total):  # each with its idempotency key, as a caller would retry
            try:
                await q.publish(i, idempotency_key=f"m{i}")
            except Exception as exc:
                gave_up.append(exc)
            published[0] += 1
            if i % 10 == 0:
                await asyncio.sleep(0.005)  # a steady stream, not one burst before the move

    async with app.worker():
        producer = asyncio.ensure_future(produce())
        await asyncio.wait_for(enough.wait(), 30)
        before = published[0]
        await asyncio.to_thread(move_slot, cluster, slot, target, 10, 0.02)
        still_producing = not producer.done()
        await producer
        await asyncio.wait_for(done.wait(), 30)
    assert gave_up == []
    assert before < total and still_producing  # the producer ran through the move
    channel = app.broker.channel
    assert isinstance(channel, ClusterChannel) and channel.redirects["MOVED"] > 0
    assert sorted(handled) == list(range(total)) and max(handled.values()) == 1
    assert cluster.owner(slot) is target
    with target.client() as node:
        assert node.exists(q.keys.normal) and node.xlen(q.keys.normal) == 0
    stats = await q.stats()
    assert (stats.depth, stats.in_flight, stats.dead) == (0, 0, 0)


async def test_a_stale_slot_map_follows_moved(app: Tidings, cluster: LocalCluster) -> None:
    """After a slot moved behind the client's back, the first call gets MOVED and is sent
    to the new owner; the next ones go there directly."""
    q = app.queue("stale")
    await q.publish("before")
    slot = slot_of(q.keys.normal)
    target = next(n for n in cluster.nodes if n is not cluster.owner(slot))
    await asyncio.to_thread(move_slot, cluster, slot, target)
    await q.publish("after")
    channel = app.broker.channel
    assert isinstance(channel, ClusterChannel)
    assert channel.address(slot) == f"127.0.0.1:{target.port}"
    client = RedisCluster(host="127.0.0.1", port=target.port)
    try:
        assert await client.xlen(q.keys.normal) == 2
    finally:
        await client.aclose()


# -- worker processes ----------------------------------------------------------------------


async def test_worker_process_killed_on_the_cluster_loses_nothing(
        app: Tidings, cluster: LocalCluster, workers: WorkerProcs, redis_url: str) -> None:
    """``tidings worker`` processes on the cluster URL; one is killed -9 mid-stream, its
    messages are reclaimed by the other: every message is done, the queue settles. The
    handlers record on the session's single server (FAULT_LEDGER_URL), counted there."""
    total = 1500
    q = app.queue(QUEUE)
    ledger = Tidings(redis_url, key_prefix=app.settings.key_prefix)
    rec = Recording(ledger)
    await app.connect()
    await ledger.connect()
    try:
        env = workers.env(app, cluster.url, vt=2, sleep=0.01, concurrency=16,
                          ledger_url=redis_url)
        victim, survivor = workers.start(env), workers.start(env)
        victim_name = await consumer_of(q, victim, detail=workers.all_logs)
        await consumer_of(q, survivor, detail=workers.all_logs)
        ids = await q.publish_many({"i": i} for i in range(total))
        await poll(lambda: _at_least(rec.done_count(), total // 3), 60, "a third done",
                   workers.all_logs)
        victim.send_signal(signal.SIGKILL)
        assert await wait_exit(victim, 10) == -signal.SIGKILL
        assert await pending_of(q, victim_name) > 0  # it died holding leases

        async def finished() -> bool:
            return await rec.done_count() == total and await is_settled(q)

        await poll(finished, 60, "every message done and settled", workers.all_logs)
        assert set(await rec.done()) == set(ids)
        assert survivor.poll() is None, workers.all_logs()
    finally:
        await drop_prefix(ledger)
        await ledger.close()


async def _at_least(count: object, n: int) -> bool:
    return int(await count) >= n  # type: ignore[misc]


# -- TLS -----------------------------------------------------------------------------------


async def test_producer_and_worker_work_on_a_tls_cluster_and_verify_it(
        tmp_path: Path) -> None:
    """``rediss+cluster://`` with the CA setting: the channel talks to each primary's TLS
    port (the slot map read over TLS names those); without the CA, a typed error."""
    binary = shutil.which("redis-server")  # Debian's is built with TLS
    assert binary is not None, "redis-server is a machine service of this project"
    ca = Authority(tmp_path / "ca")
    server, peer = ca.issue("server"), ca.issue("peer", client=True)  # peer: the bus's
    tls = ("--tls-port", "{tls_port}", "--tls-cluster", "yes", "--tls-auth-clients", "no",
           "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
           "--tls-client-cert-file", str(peer.cert), "--tls-client-key-file", str(peer.key),
           "--tls-ca-cert-file", str(ca.pair.cert))
    with running_cluster(tmp_path / "nodes", 3, *tls, binary=binary) as tls_cluster:
        url = "rediss+cluster://" + ",".join(f"127.0.0.1:{n.tls_port}"
                                             for n in tls_cluster.nodes) + "/"
        app = Tidings(url, key_prefix=new_prefix(), security={"tls_ca_file": ca.pair.cert})
        got: list[int] = []
        queues = [app.queue(f"q{i}") for i in range(6)]
        for q in queues:
            @q.handler
            async def handle(msg: Message) -> None:
                got.append(msg.payload)
        try:
            for i, q in enumerate(queues):
                await q.publish(i)
            async with app.worker():
                await poll(lambda: _true(len(got) == 6), 20, "six handled")
            assert sorted(got) == list(range(6))
            channel = app.broker.channel
            assert isinstance(channel, ClusterChannel)
            assert set(channel.primaries()) == {f"127.0.0.1:{n.tls_port}"
                                                for n in tls_cluster.nodes}
        finally:
            await drop_prefix(app)
            await app.close()
        untrusted = Tidings(url, key_prefix=new_prefix(), connect_retries=3)
        with pytest.raises(UntrustedCertificateError):
            await untrusted.connect()
        await untrusted.close()


async def _true(value: bool) -> bool:
    return value


# -- failover ------------------------------------------------------------------------------


def _queue_on(app: Tidings, cluster: LocalCluster, node_index: int, stem: str,
              **options: object) -> Queue:
    """A queue whose slot the ``node_index``-th node serves."""
    for i in range(1000):
        q = app.queue(f"{stem}{i}", **options)  # type: ignore[arg-type]
        if cluster.owner(slot_of(q.keys.normal)) is cluster.nodes[node_index]:
            return q
    raise AssertionError("no queue name hashed to that node")


async def test_primary_killed_its_replica_takes_over_and_the_app_follows(
        tmp_path: Path) -> None:
    """kill -9 of a primary with a replica: the cluster promotes the replica, and the same
    app (no restart) publishes and consumes there; every message confirmed with
    ``replicated`` durability before the kill is handled."""
    with running_cluster(tmp_path, 3, "--cluster-node-timeout", "1000",
                         replicas=1) as cluster:
        app = Tidings(cluster.url, key_prefix=new_prefix(), connect_retries=20,
                      connect_backoff=0.2)
        before = _queue_on(app, cluster, 0, "safe", durability="replicated")
        after = _queue_on(app, cluster, 0, "later")
        handled: Counter[str] = Counter()
        for q in (before, after):
            @q.handler
            async def handle(msg: Message) -> None:
                handled[msg.payload] += 1
        try:
            confirmed = [f"b{i}" for i in range(200)]
            await before.publish_many(confirmed)
            cluster.nodes[0].proc.kill()
            cluster.nodes[0].proc.wait()
            await poll(lambda: _true(cluster.owner(slot_of(after.keys.normal))
                                     is cluster.replicas[0]), 30, "the replica promoted")
            await after.publish("a0")  # the replica, promoted, has no replica of its own
            async with app.worker():
                await poll(lambda: _true(set(handled) >= {*confirmed, "a0"}), 30,
                           "every confirmed message handled")
        finally:
            await app.close()
