"""The measurements.

Every measurement runs the tidings side and the raw redis-py side in the same process, on
the same event loop and against the same server, in alternating rounds (tidings first in
even rounds, raw first in odd ones) so drift in a noisy machine hits both sides alike.
Each side of each round starts from fresh keys, which are deleted right after it.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from redis.asyncio import Redis

from tidings import Message, Outgoing, Queue, Tidings

from .drain import count_to
from .job import payload, priority
from .stats import latency_summary, median, ratio, rounded

GROUP = "bench"
RAW_READ_COUNT = 100
ACK_GRACE_S = 10.0  # after the handler saw everything, how long the worker may take to ack
RUN_TIMEOUT_S = 300.0

Metrics = dict[str, float]
Entry = tuple[bytes, dict[bytes, bytes]]
SideRun = Callable[[str, int], Awaitable[Metrics]]


@dataclass(frozen=True, slots=True)
class Plan:
    """Message counts and rounds; ``quick`` shrinks everything for a smoke run."""

    rounds: int
    single_n: int
    batch_n: int
    drain_n: int
    batch_handler_n: int
    e2e_seconds: float
    e2e_rounds: int
    drain_concurrencies: tuple[int, ...]
    e2e_rate: int = 500
    batch_chunk: int = 1000
    batch_handler_size: int = 100
    batch_handler_concurrency: int = 8

    @classmethod
    def full(cls, rounds: int | None = None) -> Plan:
        return cls(rounds=rounds or 5, single_n=20_000, batch_n=100_000, drain_n=50_000,
                   batch_handler_n=50_000, e2e_seconds=10.0, e2e_rounds=min(rounds or 3, 3),
                   drain_concurrencies=(64, 256, 1024))

    @classmethod
    def quick(cls, rounds: int | None = None) -> Plan:
        return cls(rounds=rounds or 3, single_n=3_000, batch_n=20_000, drain_n=10_000,
                   batch_handler_n=10_000, e2e_seconds=3.0, e2e_rounds=min(rounds or 2, 2),
                   drain_concurrencies=(256,))


async def read_group(r: Redis, stream: str, count: int, block: int | None = None) -> list[Entry]:
    """XREADGROUP for consumer c1 of the bench group; the entries of ``stream`` (maybe none)."""
    res: Any = await r.xreadgroup(GROUP, "c1", {stream: ">"}, count=count, block=block)
    return list(res[0][1]) if res else []


def log(text: str) -> None:
    print(f"[bench] {text}", flush=True, file=sys.stderr)


@dataclass
class Bench:
    """Holds the connections and the per-run key prefix; one method per measurement."""

    url: str
    plan: Plan
    prefix: str
    app: Tidings = field(init=False)
    raw: Redis = field(init=False)

    async def setup(self) -> None:
        self.app = Tidings(self.url, key_prefix=self.prefix)
        await self.app.connect()
        self.raw = Redis.from_url(self.url)
        await self.raw.ping()

    async def close(self) -> None:
        try:
            await self.delete_keys()
        finally:
            await self.app.close()
            await self.raw.aclose()

    async def delete_keys(self) -> int:
        """Delete every key of this run (tidings' and raw ones share the prefix)."""
        deleted = 0
        chunk: list[bytes] = []
        async for key in self.raw.scan_iter(match=f"{self.prefix}:*", count=2000):
            chunk.append(key)
            if len(chunk) >= 1000:
                deleted += await self.raw.unlink(*chunk)
                chunk = []
        if chunk:
            deleted += await self.raw.unlink(*chunk)
        return deleted

    async def server_info(self) -> dict[str, Any]:
        info = await self.raw.info("server")
        out = {"redis_version": info.get("redis_version"),
               "io_threads_active": info.get("io_threads_active")}
        if "valkey_version" in info:
            out["valkey_version"] = info["valkey_version"]
        return out

    # -- plumbing ----------------------------------------------------------------------

    def raw_key(self, tag: str) -> str:
        return f"{self.prefix}:raw:{tag}"

    def new_queue(self, tag: str) -> Queue:
        return self.app.queue(tag.replace(":", "-"))

    async def paired(self, name: str, rounds: int, n: int, tidings_run: SideRun,
                     raw_run: SideRun, warmup_n: int = 0) -> tuple[list[Metrics], list[Metrics]]:
        """Run both sides ``rounds`` times, alternating which goes first."""
        if warmup_n:
            for side, run in (("tidings", tidings_run), ("raw", raw_run)):
                await run(f"{name}-warm-{side}", warmup_n)
                await self.delete_keys()
        results: dict[str, list[Metrics]] = {"tidings": [], "raw": []}
        for r in range(rounds):
            order = [("tidings", tidings_run), ("raw", raw_run)]
            if r % 2:
                order.reverse()
            for side, run in order:
                gc.collect()
                metrics = await run(f"{name}-{r}-{side}", n)
                await self.delete_keys()
                results[side].append(metrics)
                log(f"{name} round {r + 1}/{rounds} {side}: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return results["tidings"], results["raw"]

    async def publish_backlog(self, queue: Queue, n: int) -> None:
        """Pre-publish ``n`` messages the production way (priorities, idempotency keys)."""
        await queue.publish_many(
            (Outgoing(payload(i), priority=priority(i), idempotency_key=f"k{i}")
             for i in range(n)), chunk_size=1000)

    async def raw_backlog(self, stream: str, n: int) -> None:
        await self.raw.xgroup_create(stream, GROUP, id="0", mkstream=True)
        for start in range(0, n, 1000):
            pipe = self.raw.pipeline(transaction=False)
            for i in range(start, min(n, start + 1000)):
                pipe.xadd(stream, {"m": msgpack.packb(payload(i))})
            await pipe.execute()

    async def run_worker_until(self, queue: Queue, done: asyncio.Event,
                               concurrency: int) -> tuple[float, int]:
        """Start a worker, time it until ``done``, stop it; returns (seconds, left unacked)."""
        worker = self.app.worker([queue.name], concurrency=concurrency)
        started = time.perf_counter()
        task = asyncio.create_task(worker.run())
        waiter = asyncio.create_task(done.wait())
        finished, _ = await asyncio.wait({task, waiter}, timeout=RUN_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
        elapsed = time.perf_counter() - started
        worker.stop()
        waiter.cancel()
        await task
        if waiter not in finished:
            raise RuntimeError(f"worker on {queue.name} did not finish within {RUN_TIMEOUT_S}s")
        left = sum([await self.raw.xlen(key) for key in queue.keys.lanes])
        return elapsed, left

    # -- 1. single publish -------------------------------------------------------------

    async def single_publish(self) -> dict[str, Any]:
        async def tidings_run(tag: str, n: int) -> Metrics:
            queue = self.new_queue(tag)
            lat: list[float] = []
            clock = time.perf_counter
            started = clock()
            for i in range(n):
                t = clock()
                await queue.publish(payload(i), priority=priority(i), idempotency_key=f"k{i}")
                lat.append(clock() - t)
            elapsed = clock() - started
            return {"msg_per_s": n / elapsed, **latency_summary(lat)}

        async def raw_run(tag: str, n: int) -> Metrics:
            stream, r = self.raw_key(tag), self.raw
            lat: list[float] = []
            clock = time.perf_counter
            started = clock()
            for i in range(n):
                t = clock()
                await r.xadd(stream, {"m": msgpack.packb(payload(i))})
                lat.append(clock() - t)
            elapsed = clock() - started
            return {"msg_per_s": n / elapsed, **latency_summary(lat)}

        n = self.plan.single_n
        t, r = await self.paired("single_publish", self.plan.rounds, n, tidings_run, raw_run,
                                 warmup_n=min(1000, n))
        return summarize(t, r, throughput="msg_per_s", extra={
            "messages_per_round": n,
            "tidings_call": "await q.publish(payload, priority=<cycled>, idempotency_key=f'k{i}')",
            "raw_call": "await r.xadd(stream, {'m': msgpack.packb(payload)})",
        })

    # -- 2. batch publish --------------------------------------------------------------

    async def batch_publish(self) -> dict[str, Any]:
        chunk = self.plan.batch_chunk

        async def tidings_run(tag: str, n: int) -> Metrics:
            queue = self.new_queue(tag)
            started = time.perf_counter()
            ids = await queue.publish_many(
                [Outgoing(payload(i), priority=priority(i), idempotency_key=f"k{i}")
                 for i in range(n)], chunk_size=chunk)
            elapsed = time.perf_counter() - started
            assert len(ids) == n
            return {"msg_per_s": n / elapsed}

        async def raw_run(tag: str, n: int) -> Metrics:
            stream = self.raw_key(tag)
            started = time.perf_counter()
            for start in range(0, n, chunk):
                pipe = self.raw.pipeline(transaction=False)
                for i in range(start, min(n, start + chunk)):
                    pipe.xadd(stream, {"m": msgpack.packb(payload(i))})
                await pipe.execute()
            elapsed = time.perf_counter() - started
            return {"msg_per_s": n / elapsed}

        n = self.plan.batch_n
        t, r = await self.paired("batch_publish", self.plan.rounds, n, tidings_run, raw_run,
                                 warmup_n=min(5000, n))
        return summarize(t, r, throughput="msg_per_s", extra={
            "messages_per_round": n, "chunk_size": chunk,
            "raw_call": "pipeline(transaction=False) of XADD, one execute per chunk",
        })

    # -- 3. worker drain ---------------------------------------------------------------

    async def worker_drain(self) -> dict[str, Any]:
        n = self.plan.drain_n

        def tidings_side(concurrency: int) -> SideRun:
            async def run(tag: str, n: int) -> Metrics:
                queue = self.new_queue(tag)
                await self.publish_backlog(queue, n)
                done = count_to(queue, n, concurrency)

                gc.collect()
                elapsed, left = await self.run_worker_until(queue, done, concurrency)
                return {"msg_per_s": n / elapsed, "unacked_after_stop": left}
            return run

        async def raw_run(tag: str, n: int) -> Metrics:
            stream, r = self.raw_key(tag), self.raw
            await self.raw_backlog(stream, n)
            count = 0

            async def noop_handler(entry: Entry) -> None:
                nonlocal count
                count += 1

            gc.collect()
            started = time.perf_counter()
            while count < n:
                entries = await read_group(r, stream, RAW_READ_COUNT)
                if not entries:
                    continue
                await asyncio.gather(*[asyncio.create_task(noop_handler(e)) for e in entries])
                ids = [e[0] for e in entries]
                pipe = r.pipeline(transaction=False)
                pipe.xack(stream, GROUP, *ids)
                pipe.xdel(stream, *ids)
                await pipe.execute()
            elapsed = time.perf_counter() - started
            return {"msg_per_s": n / elapsed, "unacked_after_stop": await r.xlen(stream)}

        sweep: dict[str, float] = {}
        best = self.plan.drain_concurrencies[0]
        if len(self.plan.drain_concurrencies) > 1:
            # One round per candidate concurrency, then the full rounds with the best one.
            sweep_n = max(10_000, n // 2)
            for c in self.plan.drain_concurrencies:
                rates = []
                for k in range(2):
                    m = await tidings_side(c)(f"drain-sweep-{c}-{k}", sweep_n)
                    await self.delete_keys()
                    rates.append(m["msg_per_s"])
                sweep[str(c)] = round(median(rates), 1)
                log(f"worker_drain sweep concurrency={c}: {sweep[str(c)]:.0f} msg/s")
            best = int(max(sweep, key=lambda c: sweep[c]))
        t, r = await self.paired("worker_drain", self.plan.rounds, n, tidings_side(best),
                                 raw_run, warmup_n=min(2000, n))
        return summarize(t, r, throughput="msg_per_s", extra={
            "messages_per_round": n, "concurrency_used": best,
            "concurrency_sweep_msg_per_s": sweep,
            "tidings_setup": "handler(concurrency=C), worker(concurrency=C); backlog published "
                             "with cycled priorities and idempotency keys; timed from worker "
                             "start until the handler saw all N",
            "raw_setup": f"XREADGROUP COUNT {RAW_READ_COUNT}, create_task(noop) per entry, "
                         "gather, pipelined XACK+XDEL per batch",
        })

    # -- 4. batch handler --------------------------------------------------------------

    async def batch_handler(self) -> dict[str, Any]:
        size = self.plan.batch_handler_size
        concurrency = self.plan.batch_handler_concurrency
        worker_concurrency = size * concurrency

        async def tidings_run(tag: str, n: int) -> Metrics:
            queue = self.new_queue(tag)
            await self.publish_backlog(queue, n)
            done = asyncio.Event()
            count = 0

            @queue.handler(batch_size=size, concurrency=concurrency)
            async def handle(batch: list[Message]) -> None:
                nonlocal count
                count += len(batch)
                if count >= n:
                    done.set()

            gc.collect()
            elapsed, left = await self.run_worker_until(queue, done, worker_concurrency)
            return {"msg_per_s": n / elapsed, "unacked_after_stop": left}

        async def raw_run(tag: str, n: int) -> Metrics:
            stream, r = self.raw_key(tag), self.raw
            await self.raw_backlog(stream, n)
            count = 0
            gc.collect()
            started = time.perf_counter()
            while count < n:
                entries = await read_group(r, stream, size)
                if not entries:
                    continue
                count += len(entries)
                pipe = r.pipeline(transaction=False)
                pipe.xack(stream, GROUP, *[e[0] for e in entries])
                await pipe.execute()
            elapsed = time.perf_counter() - started
            pending = (await r.xpending(stream, GROUP))["pending"]
            return {"msg_per_s": n / elapsed, "unacked_after_stop": pending}

        n = self.plan.batch_handler_n
        t, r = await self.paired("batch_handler", self.plan.rounds, n, tidings_run, raw_run,
                                 warmup_n=min(2000, n))
        return summarize(t, r, throughput="msg_per_s", extra={
            "messages_per_round": n, "batch_size": size, "handler_concurrency": concurrency,
            "worker_concurrency": worker_concurrency,
            "raw_setup": f"XREADGROUP COUNT {size} + pipelined XACK, no per-message handler",
        })

    # -- 5. end-to-end latency ---------------------------------------------------------

    async def e2e_latency(self) -> dict[str, Any]:
        rate, seconds = self.plan.e2e_rate, self.plan.e2e_seconds
        skip = rate // 4  # the first 0.25 s warms connections and is not counted

        async def paced(publish: Callable[[int, float], Awaitable[Any]], n: int) -> None:
            clock = time.perf_counter
            start = clock()
            for i in range(n):
                due = start + i / rate
                wait = due - clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                await publish(i, clock())

        async def tidings_run(tag: str, n: int) -> Metrics:
            queue = self.new_queue(tag)
            lat: list[float] = []
            done = asyncio.Event()

            @queue.handler(concurrency=256)
            async def handle(msg: Message) -> None:
                lat.append(time.perf_counter() - msg.payload["ts"])
                if len(lat) >= n:
                    done.set()

            async def publish(i: int, ts: float) -> None:
                await queue.publish({"ts": ts, "i": i, **payload(i)}, priority=priority(i),
                                    idempotency_key=f"k{i}")

            worker = self.app.worker([queue.name])
            async with worker:
                await paced(publish, n)
                await asyncio.wait_for(done.wait(), ACK_GRACE_S)
            return latency_summary(lat[skip:])

        async def raw_run(tag: str, n: int) -> Metrics:
            stream, r = self.raw_key(tag), self.raw
            await r.xgroup_create(stream, GROUP, id="0", mkstream=True)
            lat: list[float] = []
            stop = False

            async def consume() -> None:
                while not stop and len(lat) < n:
                    entries = await read_group(r, stream, RAW_READ_COUNT, block=1000)
                    if not entries:
                        continue
                    for _, fields in entries:
                        body = msgpack.unpackb(fields[b"m"])
                        lat.append(time.perf_counter() - body["ts"])
                    await r.xack(stream, GROUP, *[e[0] for e in entries])

            async def publish(i: int, ts: float) -> None:
                await r.xadd(stream, {"m": msgpack.packb({"ts": ts, "i": i, **payload(i)})})

            consumer = asyncio.create_task(consume())
            await asyncio.sleep(0.05)  # let the consumer block first, like the started worker
            await paced(publish, n)
            try:
                await asyncio.wait_for(asyncio.shield(consumer), ACK_GRACE_S)
            finally:
                stop = True
                consumer.cancel()
                await asyncio.gather(consumer, return_exceptions=True)
            return latency_summary(lat[skip:])

        n = int(rate * seconds)
        t, r = await self.paired("e2e_latency", self.plan.e2e_rounds, n, tidings_run, raw_run)
        return summarize(t, r, throughput=None, extra={
            "rate_msg_per_s": rate, "seconds_per_round": seconds,
            "tidings_setup": "handler(concurrency=256), default worker, publish with priority "
                             "and idempotency key; latency = handler start - publish call",
            "raw_setup": f"XADD + consumer in XREADGROUP BLOCK 1000 COUNT {RAW_READ_COUNT}",
        })


def summarize(tidings_rounds: list[Metrics], raw_rounds: list[Metrics], *,
              throughput: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    """Median of every metric across rounds, and tidings/raw ratios."""
    def side(rounds: list[Metrics]) -> dict[str, Any]:
        keys = rounds[0].keys()
        out: dict[str, Any] = {k: rounded(median([m[k] for m in rounds])) for k in keys}
        out["rounds"] = [{k: rounded(v) for k, v in m.items()} for m in rounds]
        return out

    result: dict[str, Any] = {"tidings": side(tidings_rounds), "raw": side(raw_rounds)}
    t, r = result["tidings"], result["raw"]
    if throughput is not None:
        result["ratio"] = rounded(ratio(t[throughput], r[throughput]))
        result["ratio_paired_median"] = rounded(median(
            [m[throughput] / n[throughput] for m, n in zip(tidings_rounds, raw_rounds,
                                                           strict=True)]))
    for key in ("p50_ms", "p99_ms"):
        if key in t:
            result[f"latency_ratio_{key[:3]}"] = rounded(ratio(t[key], r[key]))
    result.update(extra)
    return result


MEASUREMENTS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "single_publish": Bench.single_publish,
    "batch_publish": Bench.batch_publish,
    "worker_drain": Bench.worker_drain,
    "batch_handler": Bench.batch_handler,
    "e2e_latency": Bench.e2e_latency,
}


TARGETS: tuple[tuple[str, str, str, float, str], ...] = (
    # (target name, measurement, metric, threshold, ">=" or "<=")
    ("single_publish_msg_per_s", "single_publish", "msg_per_s", 6000, ">="),
    ("single_publish_p99_ms", "single_publish", "p99_ms", 0.25, "<="),
    ("batch_publish_msg_per_s", "batch_publish", "msg_per_s", 50_000, ">="),
    ("worker_drain_msg_per_s", "worker_drain", "msg_per_s", 10_000, ">="),
    ("batch_handler_msg_per_s", "batch_handler", "msg_per_s", 30_000, ">="),
    ("e2e_p99_ms", "e2e_latency", "p99_ms", 1.5, "<="),
)


# Relative targets (issue 10): tidings against the raw floor in the same run, which holds on
# a noisy machine where absolute figures do not. (target, measurement, ratio field, ...)
RATIO_TARGETS: tuple[tuple[str, str, str, float, str], ...] = (
    ("single_publish_ratio", "single_publish", "ratio_paired_median", 0.75, ">="),
    ("single_publish_p99_ratio", "single_publish", "latency_ratio_p99", 1.3, "<="),
    ("batch_publish_ratio", "batch_publish", "ratio_paired_median", 0.9, ">="),
    ("worker_drain_ratio", "worker_drain", "ratio_paired_median", 0.6, ">="),
    ("e2e_p99_ratio", "e2e_latency", "latency_ratio_p99", 1.5, "<="),
)


def evaluate_targets(results: dict[str, Any]) -> dict[str, Any]:
    """Mark each target met / not met; ``raw_status`` says whether plain redis-py meets it
    on this machine (if raw does not, the target is out of reach here for any library).
    Ratio targets compare tidings with the raw floor measured beside it."""
    def check(value: float | None, threshold: float, op: str) -> str:
        if value is None:
            return "not measured"
        ok = value >= threshold if op == ">=" else value <= threshold
        return "met" if ok else "not met"

    targets: dict[str, Any] = {}
    for name, measurement, metric, threshold, op in TARGETS:
        result = results.get(measurement, {})
        value = result.get("tidings", {}).get(metric)
        raw_value = result.get("raw", {}).get(metric)
        targets[name] = {
            "target": f"{op} {threshold}", "value": value,
            "status": check(value, threshold, op),
            "raw_value": raw_value, "raw_status": check(raw_value, threshold, op),
        }
    for name, measurement, ratio_field, threshold, op in RATIO_TARGETS:
        value = results.get(measurement, {}).get(ratio_field)
        targets[name] = {"target": f"{op} {threshold}", "value": value,
                         "status": check(value, threshold, op)}
    return targets
