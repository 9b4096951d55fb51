"""Fault injection with real processes and real servers: no mocks anywhere.

Workers run as separate OS processes (``tidings worker tests.apps.fault_app:app``) that
record what their handler did in Redis under the test's key prefix, so the test can count
at-least-once processing across processes that it kills with SIGKILL, stops with SIGTERM,
or that kill themselves (``os._exit``). Cross-process state is polled with short intervals
and a bounded timeout; in-process state is awaited.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from conftest import Recorder, new_prefix
from fault_helpers import (
    QUEUE,
    Recording,
    WorkerProcs,
    consumer_of,
    is_settled,
    pending_of,
    poll,
    text,
    wait_exit,
)
from tidings import BrokerUnavailableError, EventKind, Message, Outgoing, QueueFullError, Tidings
from tidings.core.keys import GROUP
from tidings.engine.embedded import ensure_server, server_status, stop_server
from tidings.queues import scripts
from tidings.worker import PROMOTE_LIMIT

# -- 1. SIGKILL mid-batch ------------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_mid_batch_loses_nothing(
        fault_app: Tidings, workers: WorkerProcs, report: Callable[[str], None]) -> None:
    total = 5000
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    env = workers.env(fault_app, vt=2, sleep=0.02, concurrency=16)
    victim, survivor = workers.start(env), workers.start(env)
    victim_name = await consumer_of(q, victim, detail=workers.all_logs)
    await consumer_of(q, survivor, detail=workers.all_logs)

    started = time.monotonic()
    ids = await q.publish_many({"i": i} for i in range(total))
    await poll(lambda: _at_least(rec.done_count(), total // 3), 60, "a third processed",
               workers.all_logs)
    victim.send_signal(signal.SIGKILL)
    assert await wait_exit(victim, 10) == -signal.SIGKILL
    at_kill = await rec.done_count()
    held = await pending_of(q, victim_name)
    by_victim = await rec.done_by(victim.pid)
    # The kill really landed mid-batch: the victim had done work and still held leases.
    assert 0 < at_kill < total
    assert by_victim > 0
    assert held > 0, "the victim held no leases when it was killed; the test proves nothing"

    replacement = workers.start(env)
    await consumer_of(q, replacement, detail=workers.all_logs)

    async def finished() -> bool:
        return await rec.done_count() == total and await is_settled(q)

    await poll(finished, 120, "every message processed and settled", workers.all_logs)
    elapsed = time.monotonic() - started
    done = await rec.done()
    assert set(done) == set(ids)
    stats = await q.stats()
    assert (stats.depth, stats.in_flight, stats.dead, stats.delayed) == (0, 0, 0, 0)
    assert survivor.poll() is None and replacement.poll() is None, workers.all_logs()
    twice = sum(1 for n in done.values() if n > 1)
    assert sum(stats.counters.get(f"acked:{lane}", 0) for lane in range(3)) == total
    report(f"sigkill: {total} messages in {elapsed:.1f}s; killed at {at_kill} processed "
           f"(victim finished {by_victim}, held {held} leases); processed twice: {twice}; "
           f"max times: {max(done.values())}")


async def _at_least(count: Awaitable[int], wanted: int) -> bool:
    return await count >= wanted


# -- 2. poison: the handler kills its own process ------------------------------------------


@pytest.mark.slow
async def test_poison_message_that_kills_its_worker_ends_in_dlq(
        fault_app: Tidings, workers: WorkerProcs, report: Callable[[str], None]) -> None:
    vt, max_deliveries, max_restarts = 1.0, 3, 8
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    # Concurrency 1: only the poison message is in flight when the process dies, so no
    # innocent message shares its deliveries.
    env = workers.env(fault_app, vt=vt, max_deliveries=max_deliveries, concurrency=1)
    payloads: list[Any] = [{"i": i} for i in range(30)]
    payloads.insert(10, {"poison": True})
    ids = await q.publish_many(payloads)
    poison_id = ids[10]
    others = set(ids) - {poison_id}

    exits: list[int] = []
    proc = workers.start(env)

    async def supervise() -> bool:
        nonlocal proc
        if proc.poll() is not None:
            exits.append(proc.returncode)
            assert len(exits) <= max_restarts, f"restarted {len(exits)} times{workers.all_logs()}"
            proc = workers.start(env)
        done = await rec.done()
        return await q.dlq.count() == 1 and others <= set(done) and await is_settled(q, dead=1)

    await poll(supervise, 60, "the poison message dead-lettered and the rest processed",
               workers.all_logs)

    # Exactly max_deliveries deliveries, each one killing its process.
    assert exits == [1] * max_deliveries, workers.all_logs()
    assert (await rec.started())[poison_id] == max_deliveries
    [dead] = await q.dlq.list()
    assert dead.message_id == poison_id
    assert dead.reason == "poison"
    assert f"delivered {max_deliveries} times" in dead.error.get("message", "")
    info = await q.inspect(poison_id)
    assert info is not None and info.state == "dead"
    done = await rec.done()
    assert set(done) == others and poison_id not in done

    # Never handed to a handler again: let the last worker heartbeat (and so run its
    # reclaim pass, same loop) for two more visibility timeouts past the dead-lettering.
    assert dead.dead_at is not None
    consumer = await consumer_of(q, proc, detail=workers.all_logs)
    horizon_ms = dead.dead_at.timestamp() * 1000 + 2 * vt * 1000

    async def heartbeat_passed() -> bool:
        score = await fault_app.broker.client.zscore(q.keys.consumers, consumer)
        return score is not None and score >= horizon_ms

    await poll(heartbeat_passed, 10 * vt, "two more visibility timeouts of heartbeats",
               workers.all_logs)
    assert proc.poll() is None, workers.all_logs()
    assert (await rec.started())[poison_id] == max_deliveries
    assert await is_settled(q, dead=1)
    report(f"poison: worker exits {exits}; dead-lettered after {max_deliveries} deliveries; "
           f"{len(others)} others processed")


@pytest.mark.slow
async def test_messages_beside_a_poison_message_are_not_dead_lettered(
        fault_app: Tidings, workers: WorkerProcs, report: Callable[[str], None]) -> None:
    vt, max_deliveries, max_restarts = 1.0, 3, 8
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    # Concurrency 4 and two workers: every time the poison message kills its process, the
    # messages that process held die with it.
    env = workers.env(fault_app, vt=vt, max_deliveries=max_deliveries, concurrency=4,
                      sleep=0.05)
    payloads: list[Any] = [{"i": i} for i in range(200)]
    payloads.insert(100, {"poison": True})
    ids = await q.publish_many(payloads)
    poison_id = ids[100]
    others = set(ids) - {poison_id}
    procs = [workers.start(env), workers.start(env)]
    exits: list[int] = []

    async def supervise() -> bool:
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                exits.append(proc.returncode)
                assert len(exits) <= max_restarts, f"{len(exits)} restarts{workers.all_logs()}"
                procs[i] = workers.start(env)
        return others <= set(await rec.done()) and await q.dlq.count() >= 1 and \
            await is_settled(q, dead=await q.dlq.count())

    await poll(supervise, 90, "the poison message parked and the rest processed",
               workers.all_logs)
    dead = await q.dlq.list()
    assert [(d.message_id, d.reason) for d in dead] == [(poison_id, "poison")]
    # Twice beside others (deliveries 1 and 2), then alone (3): each delivery killed a process.
    assert (await rec.started())[poison_id] == max_deliveries
    assert exits == [1] * max_deliveries, workers.all_logs()
    report(f"poison beside others: {len(dead)} dead-lettered (the poison message), "
           f"{len(others)} others processed, worker exits {exits}")


# -- 3. SIGTERM ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_lets_running_handlers_finish_and_acks_them(
        fault_app: Tidings, workers: WorkerProcs, report: Callable[[str], None]) -> None:
    total, concurrency, grace = 20, 8, 10.0
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    # A long visibility timeout: nothing is redelivered within the test unless handed back.
    env = workers.env(fault_app, vt=60, sleep=1.0, concurrency=concurrency)
    proc = workers.start(env, "--grace", str(grace))
    await consumer_of(q, proc, detail=workers.all_logs)
    ids = await q.publish_many({"i": i} for i in range(total))
    await poll(lambda: _at_least(rec.started_count(), concurrency), 20,
               "the worker to fill its slots", workers.all_logs)

    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    rc = await wait_exit(proc, grace + 5)
    took = time.monotonic() - signalled
    assert rc == 0, workers.log(proc)
    assert took < grace, f"exit took {took:.1f}s, grace is {grace}s"

    started, done = await rec.started(), await rec.done()
    # Every handler that started finished and was acked exactly once; nothing else started.
    assert len(started) >= concurrency
    assert started == done
    assert set(started.values()) == {1}
    stats = await q.stats()
    assert (stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0)
    assert stats.depth == total - len(done)
    assert sum(stats.counters.get(f"acked:{lane}", 0) for lane in range(3)) == len(done)
    assert stats.counters.get("released", 0) == 0
    for msg_id in set(ids) - set(done):
        info = await q.inspect(msg_id)
        assert info is not None and info.state == "queued" and info.deliveries == 0
    report(f"sigterm (1 s handlers, grace {grace}s): exit 0 after {took:.2f}s, "
           f"{len(done)} in-flight messages acked, {stats.depth} left queued")


@pytest.mark.slow
async def test_sigterm_past_grace_hands_messages_back_for_another_worker(
        fault_app: Tidings, workers: WorkerProcs, report: Callable[[str], None]) -> None:
    total, concurrency, grace, vt = 20, 8, 0.5, 60.0
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    slow = workers.env(fault_app, vt=vt, sleep=30, concurrency=concurrency)
    proc = workers.start(slow, "--grace", str(grace))
    await consumer_of(q, proc, detail=workers.all_logs)
    ids = await q.publish_many({"i": i} for i in range(total))
    await poll(lambda: _at_least(rec.started_count(), concurrency), 20,
               "the worker to fill its slots", workers.all_logs)
    first = await rec.started()

    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    rc = await wait_exit(proc, 10)
    took = time.monotonic() - signalled
    assert rc == 0, workers.log(proc)
    assert took < grace + 3, f"exit took {took:.1f}s with a {grace}s grace"

    # Handed back at once: nothing in flight, every message waiting again, none finished.
    stats = await q.stats()
    assert stats.in_flight == 0
    assert stats.depth + stats.delayed == total
    assert stats.counters.get("released", 0) == len(first)
    assert await rec.done_count() == 0
    for msg_id in first:
        info = await q.inspect(msg_id)
        assert info is not None and info.state in ("queued", "delayed"), info

    # Another worker gets them long before the 60 s visibility timeout could have.
    fast = workers.env(fault_app, vt=vt, sleep=0, concurrency=concurrency)
    other = workers.start(fast)
    took_over = time.monotonic()

    async def finished() -> bool:
        return await rec.done_count() == total and await is_settled(q)

    await poll(finished, vt / 3, "the second worker to process everything", workers.all_logs)
    took_over = time.monotonic() - took_over
    done, started = await rec.done(), await rec.started()
    assert set(done) == set(ids) and set(done.values()) == {1}
    assert {started[m] for m in first} == {2}  # once cancelled, once finished
    assert other.poll() is None
    report(f"sigterm (30 s handlers, grace {grace}s): exit 0 after {took:.2f}s, "
           f"{len(first)} handed back; second worker finished all {total} in {took_over:.1f}s "
           f"(visibility timeout {vt:.0f}s)")


# -- 4. the server is killed and restarted -------------------------------------------------


@pytest.fixture
def private_server() -> Iterator[Path]:
    """A data dir for a dedicated embedded server (short path: unix socket length limit)."""
    path = Path(tempfile.mkdtemp(prefix="tdf", dir="/tmp"))
    try:
        yield path
    finally:
        try:
            stop_server(path)
        finally:
            shutil.rmtree(path, ignore_errors=True)


def _server_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # an unreaped zombie (no init reaping in a container) is gone too
        return Path(f"/proc/{pid}/cmdline").read_bytes() == b""
    except OSError:
        return True


@pytest.mark.slow
async def test_worker_survives_server_kill_and_restart(
        private_server: Path, fault_app: Tidings, workers: WorkerProcs,
        report: Callable[[str], None]) -> None:
    total, outage = 2000, 1.0
    url = await asyncio.to_thread(ensure_server, private_server, appendfsync="always")
    # The broker is the private server; handlers record to the session's server (the
    # ledger), so they keep finishing while the broker is down and the worker's own fetch,
    # ack and heartbeat paths have to ride out the outage.
    app = Tidings(url, key_prefix=fault_app.settings.key_prefix)
    q = app.queue(QUEUE, visibility_timeout=2)
    rec = Recording(fault_app)
    try:
        await app.connect()
        ids = await q.publish_many({"i": i} for i in range(total))
        env = workers.env(app, url, vt=2, sleep=0.02, concurrency=8,
                          ledger_url=fault_app.settings.redis_url)
        proc = workers.start(env)
        await poll(lambda: _at_least(rec.done_count(), total // 3), 60, "a third processed",
                   workers.all_logs)

        pid = server_status(private_server)["pid"]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await poll(lambda: asyncio.to_thread(_server_gone, pid), 10, "the server to die")
        at_kill = await rec.done_count()
        await app.close()
        await asyncio.sleep(outage)  # the outage itself is the fault being injected
        assert proc.poll() is None, workers.log(proc)
        assert await asyncio.to_thread(ensure_server, private_server,
                                       appendfsync="always") == url
        await app.connect()
        stats = await q.stats()  # what the AOF (fsync always) brought back
        assert stats.counters["published"] == total

        async def finished() -> bool:
            return await rec.done_count() == total and await is_settled(q)

        await poll(finished, 90, "every message processed after the restart", workers.all_logs)
        assert proc.poll() is None, "the worker died instead of reconnecting" + workers.log(proc)
        assert "retrying in" in workers.logs[proc.pid].read_text(), (
            "the worker never noticed the outage" + workers.log(proc))
        done = await rec.done()
        assert set(done) == set(ids)
        twice = sum(1 for n in done.values() if n > 1)
        report(f"server restart: killed at {at_kill}/{total} processed; back with depth "
               f"{stats.depth}, in flight {stats.in_flight}; all {total} processed afterwards "
               f"by the same worker; processed twice: {twice}")
    finally:
        workers.kill_all()
        await app.close()


# -- 5. the server is unreachable ----------------------------------------------------------


async def test_publish_to_unreachable_server_raises_broker_unavailable() -> None:
    app = Tidings("redis://127.0.0.1:1", connect_retries=2, connect_backoff=0.05,
                  key_prefix=new_prefix())
    q = app.queue(QUEUE)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="after 3 attempts") as caught:
        await q.publish({"x": 1})
    took = time.monotonic() - started
    assert took < 5, f"gave up after {took:.1f}s"
    assert isinstance(caught.value.__cause__, (RedisConnectionError, OSError))
    assert not app.broker.connected
    with pytest.raises(BrokerUnavailableError):  # and again: no half-connected state left
        await q.publish_many([{"x": 2}])
    await app.close()


async def test_worker_process_exits_with_error_when_server_unreachable(
        tmp_path: Path) -> None:
    procs = WorkerProcs(tmp_path)
    env = procs.env(Tidings("redis://127.0.0.1:1", key_prefix=new_prefix()))
    env["TIDINGS_CONNECT_RETRIES"] = "2"
    try:
        proc = procs.start(env)
        started = time.monotonic()
        rc = await wait_exit(proc, 20)
        took = time.monotonic() - started
    finally:
        procs.kill_all()
    output = procs.logs[proc.pid].read_text()
    assert rc == 3, procs.log(proc)  # the exit code of "server unavailable"
    assert "unreachable after 3 attempts" in output
    assert "Traceback" not in output
    assert took < 15


# -- 6. cleanup never removes pending or undelivered messages ------------------------------


async def test_cleanup_keeps_pending_and_undelivered_messages(
        app: Tidings, recorder: Recorder) -> None:
    total, taken, acked = 1000, 300, 200
    q = app.queue("clean", visibility_timeout=1)
    processed: list[Message] = []

    @q.handler(concurrency=64)
    async def handle(msg: Message) -> None:
        processed.append(msg)

    await app.connect()
    client = app.broker.client
    lanes = ("high", "normal", "low")
    ids = await q.publish_many(Outgoing({"i": i}, lanes[i % 3]) for i in range(total))

    # A consumer takes 300 through the real fetch script, then acks 200 of them.
    delivered, _, _, _ = await scripts.fetch(
        client, q.keys, consumer="manual", quotas=(100, 100, 100), capacity=taken,
        promote_limit=PROMOTE_LIMIT, on_expire="dead_letter")
    assert len(delivered) == taken
    settle = delivered[:acked]
    acks = [(lane, sid, token, msg_id) for lane, sid, token, _, msg_id in settle]
    assert await scripts.ack(client, q.keys, acks) == []
    pending = {text(msg_id): (int(lane), text(sid)) for lane, sid, _, _, msg_id in
               delivered[acked:]}
    acked_ids = {text(d[4]) for d in settle}

    lengths = [await client.xlen(key) for key in q.keys.lanes]
    assert sum(lengths) == total - acked
    held = 0
    for key in q.keys.lanes:
        held += int((await client.xpending(key, GROUP))["pending"])
    assert held == taken - acked
    for msg_id, (lane, sid) in pending.items():
        [(_, fields)] = await client.xrange(q.keys.lane(lane), sid, sid)
        assert text(fields[b"i"]) == msg_id
        in_pel = await client.xpending_range(q.keys.lane(lane), GROUP, sid, sid, 1)
        assert in_pel and text(in_pel[0]["consumer"]) == "manual"
    for lane, sid, _, _, _ in settle:
        assert await client.xrange(q.keys.lane(int(lane)), text(sid), text(sid)) == []
    stats = await q.stats()
    assert (stats.depth, stats.in_flight) == (total - taken, taken - acked)

    # A worker delivers the 700 never delivered, and reclaims the 100 left pending.
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, total - acked, timeout=30)
    got = {m.id for m in processed}
    assert got == set(ids) - acked_ids
    assert len(processed) == total - acked  # each exactly once
    assert {m.delivery for m in processed if m.id in pending} == {2}
    assert {m.delivery for m in processed if m.id not in pending} == {1}

    # Everything acked: the streams and the bookkeeping are empty.
    assert [await client.xlen(key) for key in q.keys.lanes] == [0, 0, 0]
    assert await client.xlen(q.keys.dlq) == 0
    assert await client.hlen(q.keys.deliveries) == 0  # delivery counters
    assert await client.hlen(q.keys.index) == 0  # message index
    assert await is_settled(q)


# -- 7. memory returns to its baseline after a million messages ----------------------------


async def _used_memory(client: Any) -> int:
    return int((await client.info("memory"))["used_memory"])


async def _prefix_bytes(app: Tidings) -> int:
    client = app.broker.client
    total = 0
    async for key in client.scan_iter(match=f"{app.settings.key_prefix}:*", count=1000):
        total += int(await client.memory_usage(key, samples=0) or 0)
    return total


@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_memory_returns_to_baseline_after_a_million_messages(
        redis_url: str, private_server: Path, report: Callable[[str], None]) -> None:
    total, warmup, chunk = 1_000_000, 1000, 1000
    bound = 2 * 1024 * 1024
    # used_memory is server-wide, so it is measured on a server nobody else uses: a private
    # one run from the same binary as the suite's server (the shared one may be busy).
    probe = Tidings(redis_url, key_prefix=new_prefix())
    await probe.connect()
    info = await probe.broker.client.info("server")
    await probe.close()
    exe = str(info.get("executable") or "")
    candidates = [exe, shutil.which(Path(exe).name)] if exe else []
    binary = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    url = await asyncio.to_thread(ensure_server, private_server, binary=binary)
    app = Tidings(url, key_prefix=new_prefix())
    q = app.queue("mem", visibility_timeout=30)
    seen = 0
    all_seen = asyncio.Event()
    target = warmup

    @q.handler(concurrency=512)
    async def noop(msg: Message) -> None:
        nonlocal seen
        seen += 1
        if seen >= target:
            all_seen.set()

    async def acked(n: int) -> bool:
        s = await q.stats()
        return (sum(s.counters.get(f"acked:{lane}", 0) for lane in range(3)) == n
                and s.depth == 0 and s.in_flight == 0)

    try:
        await app.connect()
        client = app.broker.client
        server = (await client.info("server"))
        version = f"{'valkey' if 'valkey_version' in server else 'redis'} " + str(
            server.get("valkey_version") or server["redis_version"])
        async with app.worker(concurrency=512):
            cold = await _used_memory(client)
            # Warm-up: the streams, group, consumer and hashes exist, as on a live queue.
            await q.publish_many({"i": i} for i in range(warmup))
            await asyncio.wait_for(all_seen.wait(), 30)
            await poll(lambda: acked(warmup), 30, "warm-up acked")
            baseline, baseline_keys = await _used_memory(client), await _prefix_bytes(app)

            all_seen.clear()
            target = warmup + total
            started = time.monotonic()
            for start in range(0, total, 10 * chunk):
                # No idempotency keys: they live on for the dedupe window by design.
                await q.publish_many(({"i": i} for i in range(start, start + 10 * chunk)),
                                     chunk_size=chunk)
            published = time.monotonic() - started
            await asyncio.wait_for(all_seen.wait(), 900)
            await poll(lambda: acked(warmup + total), 60, "all acked")
            elapsed = time.monotonic() - started
            after, after_keys = await _used_memory(client), await _prefix_bytes(app)
    finally:
        await app.close()

    delta = after - baseline
    report(f"memory ({version}): cold {cold} B, baseline {baseline} B, after {total} messages "
           f"{after} B (delta {delta:+d} B = {delta / 2**20:+.3f} MiB); queue keys "
           f"{baseline_keys} B -> {after_keys} B; published in {published:.1f}s, all "
           f"processed in {elapsed:.1f}s ({total / elapsed:,.0f} msg/s)")
    assert seen == warmup + total
    assert delta <= bound, f"used_memory grew by {delta} bytes (bound {bound})"
    assert after_keys - baseline_keys <= 64 * 1024


# -- a refused write (OOM under noeviction) must not silently kill the heartbeat ------------


async def test_a_worker_keeps_heartbeating_and_settling_while_the_server_refuses_writes(
        private_server: Path) -> None:
    """maxmemory reached: publishes are refused whole, but what was accepted still drains
    (the consumer scripts run with allow-oom), so the server can get its memory back."""
    vt = 0.6  # heartbeat every 0.2 s
    url = await asyncio.to_thread(ensure_server, private_server)
    app = Tidings(url, key_prefix=new_prefix(), memory_slow_at=1.0, memory_refuse_at=1.0)
    q = app.queue("hb", visibility_timeout=vt)
    release = asyncio.Event()
    done: list[str] = []

    @q.handler(concurrency=4)
    async def handle(msg: Message) -> None:
        await release.wait()
        done.append(msg.id)

    await app.connect()
    client = app.broker.client

    async def server_ms() -> float:
        sec, usec = await client.time()
        return sec * 1000 + usec / 1000

    async def last_beat() -> float:
        return float(await client.zscore(q.keys.consumers, "hb-worker") or 0)

    accepted = await q.publish_many(range(20))
    try:
        async with app.worker(consumer_name="hb-worker"):
            await poll(last_beat, 5, "the first heartbeat")
            await client.config_set("maxmemory", "1")  # every denyoom write is refused now
            try:
                full_since = await server_ms()
                with pytest.raises(QueueFullError):
                    await q.publish("refused")

                async def beating() -> bool:
                    return await last_beat() > full_since

                await poll(beating, 5, "a heartbeat on the full server")
                release.set()

                async def drained() -> bool:
                    return len(done) == 20 and (await q.stats()).depth == 0

                await poll(drained, 10, "every accepted message settled on the full server")
            finally:
                await client.config_set("maxmemory", "0")
            assert sorted(done) == sorted(accepted)
            assert await q.publish("room again")
    finally:
        await app.close()
