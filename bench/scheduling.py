"""Scheduling benchmarks: delayed-delivery lateness, promotion throughput, campaign enqueue.

``python -m bench.scheduling`` prints JSON; ``--quick`` shrinks every count tenfold. Each
measurement is a function returning a dict, usable from ``python -m bench`` through
:func:`measurements` (a ``Bench`` gives its ``url`` and key ``prefix``).

* ``delayed_lateness``: with ``pending`` messages parked in the delayed set (due in a day),
  probes due every few milliseconds are delivered by a running worker; lateness = handler
  start - due time (same machine, one clock). Target: p99 < 250 ms.
* ``promotion_throughput``: ``n`` messages fall due within the same second; how fast the
  fetch script moves them into the lanes with a worker running (``promoted_msg_per_s``,
  until the delayed set is empty) and hands them to the handler (``delivered_msg_per_s``),
  plus the fetch script alone promoting with zero capacity (``promote_only_msg_per_s``).
* ``campaign_enqueue``: ``Campaigns.schedule`` for ``n`` recipients in five zones.
* Memory: ``used_memory`` delta / count, per plain delayed message and per campaign message
  (which adds its idempotency key and its entry in the campaign's pending set). On a server
  other clients use at the same time the deltas include their activity.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall_time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from tidings import Message, Outgoing, Tidings
from tidings.engine.scripts import SCRIPTS
from tidings.scheduling.campaigns import Campaigns, Recipient

from .stats import RESULTS, latency_summary

DEFAULT_URL = "redis://127.0.0.1:6379/0"
ZONES = ["Asia/Tokyo", "America/New_York", "Europe/Berlin", "America/Sao_Paulo", None]


@dataclass(frozen=True, slots=True)
class Sizes:
    pending: int = 1_000_000
    probes: int = 2000
    probe_spacing_ms: float = 5.0
    promotion_n: int = 100_000
    campaign_n: int = 1_000_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(pending=100_000, probes=500, promotion_n=10_000, campaign_n=100_000)


def log(text: str) -> None:
    print(f"[bench.scheduling] {text}", flush=True, file=sys.stderr)


async def _used_memory(client: Redis) -> int:
    gc.collect()
    return int((await client.info("memory"))["used_memory"])


async def _drop(client: Redis, prefix: str) -> None:
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 2000:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)


@asynccontextmanager
async def _session(url: str, prefix: str) -> AsyncIterator[tuple[Tidings, Redis]]:
    """A connected app and a raw client under ``prefix``; every key under it is dropped after."""
    app = Tidings(url, key_prefix=prefix)
    raw = Redis.from_url(url)
    try:
        await app.connect()
        yield app, raw
    finally:
        await _drop(raw, prefix)
        await app.close()
        await raw.aclose()


def _payload(i: int) -> dict[str, Any]:
    return {"to": f"user{i}@example.com", "template": "reminder", "vars": {"n": i}}


async def _fill_delayed(app: Tidings, queue: str, n: int, due: datetime) -> float:
    """Publish ``n`` delayed messages; returns seconds taken."""
    q = app.queue(queue)
    started = time.perf_counter()
    await q.publish_many((Outgoing(_payload(i), send_at=due) for i in range(n)),
                         chunk_size=1000)
    return time.perf_counter() - started


async def delayed_lateness(url: str, prefix: str, sizes: Sizes = Sizes()) -> dict[str, Any]:
    """p50/p99/max lateness of delayed messages with ``sizes.pending`` others waiting."""
    async with _session(url, prefix) as (app, raw):
        before = await _used_memory(raw)
        fill_s = await _fill_delayed(app, "parked", sizes.pending,
                                     datetime.now(UTC) + timedelta(days=1))
        per_message = (await _used_memory(raw) - before) / sizes.pending
        log(f"{sizes.pending} parked in {fill_s:.1f}s; {per_message:.0f} bytes each")
        q = app.queue("parked")  # probes share the delayed set with the parked messages
        handled: dict[str, float] = {}
        done = asyncio.Event()

        @q.handler(concurrency=256)
        async def handle(msg: Message) -> None:
            handled[msg.id] = time.time()
            if len(handled) >= sizes.probes:
                done.set()

        async with app.worker(["parked"]):
            await asyncio.sleep(0.5)  # the worker is idle, blocked until the next due time
            base = time.time() + 1.0
            dues = [base + i * sizes.probe_spacing_ms / 1000 for i in range(sizes.probes)]
            ids = await q.publish_many(
                [Outgoing({"probe": i}, send_at=datetime.fromtimestamp(due, UTC))
                 for i, due in enumerate(dues)])
            await asyncio.wait_for(done.wait(), timeout=60 + sizes.probes * 0.01)
        # Due times are stored in whole milliseconds: compare with that.
        late = [handled[i] - int(d * 1000) / 1000 for i, d in zip(ids, dues, strict=True)]
        summary = {k: round(v, 2) for k, v in latency_summary(late).items()}
        return {
            "pending_delayed": sizes.pending, "probes": sizes.probes,
            "probe_spacing_ms": sizes.probe_spacing_ms, **summary,
            "min_ms": round(min(late) * 1000, 2),
            "target_p99_ms": 250, "met": summary["p99_ms"] < 250,
            "fill_msg_per_s": round(sizes.pending / fill_s),
            "memory_bytes_per_delayed_message": round(per_message),
        }


async def promotion_throughput(url: str, prefix: str, sizes: Sizes = Sizes()) -> dict[str, Any]:
    """How fast ``sizes.promotion_n`` messages falling due at once are released."""
    n = sizes.promotion_n
    async with _session(url, prefix) as (app, raw):
        out: dict[str, Any] = {"messages": n}

        async def park_then_make_due(queue: str, lead_s: float) -> float:
            """Park n messages, then move them all to one due time (a burst); returns it.

            Published far ahead and re-scored, so that publishing time does not eat into
            the measurement; the due time is on the server clock, as promotion uses it.
            """
            await _fill_delayed(app, queue, n, datetime.now(UTC) + timedelta(days=1))
            keys = app.queue(queue).keys
            server_s, micros = await raw.time()
            due_ms = int(server_s) * 1000 + int(micros) // 1000 + int(lead_s * 1000)
            ids: list[bytes] = list(await raw.zrange(keys[3], 0, -1))  # type: ignore[arg-type]
            for i in range(0, len(ids), 5000):
                scores: dict[bytes, float] = dict.fromkeys(ids[i:i + 5000], due_ms)
                await raw.zadd(keys[3], scores, xx=True)
            return due_ms / 1000

        # 1. The fetch script alone, no consumer (capacity 0): promotion is its first step.
        keys = app.queue("burst-alone").keys
        due_at = await park_then_make_due("burst-alone", 0.1)
        await asyncio.sleep(max(0.0, due_at - time.time()) + 0.05)
        started = time.perf_counter()
        while await raw.zcard(keys[3]):
            await SCRIPTS.fetch(raw, keys, ["tidings", "bench", 0, 0, 0, 0, 1000,
                                            "dead_letter"])
        out["promote_only_msg_per_s"] = round(n / (time.perf_counter() - started))

        # 2. A worker running: promotion interleaved with fetching and delivery.
        q = app.queue("burst")
        handled = 0
        done = asyncio.Event()

        @q.handler(concurrency=1024)
        async def handle(msg: Message) -> None:
            nonlocal handled
            handled += 1
            if handled >= n:
                done.set()

        due_at = await park_then_make_due("burst", 1.5)
        async with app.worker(["burst"], concurrency=2048):  # idle until the burst is due
            while await raw.zcard(q.keys[3]):  # noqa: ASYNC110 - nothing signals "empty"
                await asyncio.sleep(0.002)
            promoted_at = time.time()
            await asyncio.wait_for(done.wait(), timeout=300)
            delivered_at = time.time()
        out.update({
            "promoted_msg_per_s": round(n / max(1e-3, promoted_at - due_at)),
            "delivered_msg_per_s": round(n / max(1e-3, delivered_at - due_at)),
            "all_promoted_after_due_s": round(promoted_at - due_at, 3),
            "all_handled_after_due_s": round(delivered_at - due_at, 3),
            "note": "all due at the same millisecond; fetch promotes up to 1000 per call "
                    "(worker.PROMOTE_LIMIT), and a worker fetches as handlers free capacity",
        })
        return out


async def campaign_enqueue(url: str, prefix: str, sizes: Sizes = Sizes()) -> dict[str, Any]:
    """Campaigns.schedule rate for ``sizes.campaign_n`` recipients, memory and cancel rate."""
    n = sizes.campaign_n
    async with _session(url, prefix) as (app, raw):
        campaigns = Campaigns.of(app)
        app.queue("campaign")
        day = date(datetime.now(UTC).year + 1, 1, 12)
        recipients = (Recipient(f"user-{i}", _payload(i), ZONES[i % len(ZONES)])
                      for i in range(n))
        before = await _used_memory(raw)
        started = time.perf_counter()
        progress = await campaigns.schedule("bench", "campaign", recipients,
                                            local_time=wall_time(9), date=day)
        elapsed = time.perf_counter() - started
        per_message = (await _used_memory(raw) - before) / n
        assert progress.scheduled == n, progress
        log(f"campaign of {n} scheduled in {elapsed:.1f}s")
        started = time.perf_counter()
        cancelled = await campaigns.cancel("bench")
        cancel_s = time.perf_counter() - started
        assert cancelled.cancelled == n, cancelled
        return {
            "recipients": n, "zones": len(ZONES), "chunk_size": 1000,
            "enqueue_s": round(elapsed, 2), "enqueue_msg_per_s": round(n / elapsed),
            "memory_bytes_per_campaign_message": round(per_message),
            "cancel_s": round(cancel_s, 2), "cancel_msg_per_s": round(n / cancel_s),
        }


Measurement = Callable[[Any], Awaitable[dict[str, Any]]]


def measurements(quick: bool = False) -> dict[str, Measurement]:
    """The measurements for ``python -m bench``: each takes a Bench (``url``, ``prefix``)."""
    sizes = Sizes.quick() if quick else Sizes()

    def adapt(fn: Callable[[str, str, Sizes], Awaitable[dict[str, Any]]],
              tag: str) -> Measurement:
        async def run(bench: Any) -> dict[str, Any]:
            return await fn(bench.url, f"{bench.prefix}:{tag}", sizes)
        return run

    return {"delayed_lateness": adapt(delayed_lateness, "lateness"),
            "promotion_throughput": adapt(promotion_throughput, "promotion"),
            "campaign_enqueue": adapt(campaign_enqueue, "campaign")}


async def run_all(url: str, quick: bool, only: list[str]) -> dict[str, Any]:
    sizes = Sizes.quick() if quick else Sizes()
    prefix = f"tbench-sched-{os.getpid()}-{os.urandom(3).hex()}"
    fns = {"delayed_lateness": delayed_lateness, "promotion_throughput": promotion_throughput,
           "campaign_enqueue": campaign_enqueue}
    results: dict[str, Any] = {}
    for name in only or list(fns):
        log(f"== {name}")
        started = time.perf_counter()
        results[name] = await fns[name](url, f"{prefix}:{name}", sizes)
        log(f"== {name} done in {time.perf_counter() - started:.1f}s")
    raw = Redis.from_url(url)
    info = await raw.info("server")
    await raw.aclose()
    return {"server": {"redis_version": info.get("redis_version"), "url": url},
            "cpu_count": os.cpu_count(), "sizes": asdict(sizes), "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduling", description=__doc__)
    parser.add_argument("--redis-url", default=os.environ.get("TIDINGS_BENCH_REDIS_URL",
                                                              DEFAULT_URL))
    parser.add_argument("--quick", action="store_true", help="tenfold smaller counts")
    parser.add_argument("--only", action="append", default=[],
                        choices=["delayed_lateness", "promotion_throughput",
                                 "campaign_enqueue"])
    parser.add_argument("--output", type=Path, default=RESULTS / "scheduling.json",
                        help="where to write the JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        report = runner.run(run_all(args.redis_url, args.quick, args.only))
    text = json.dumps(report, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
