"""``python -m bench.flow``: flow-control figures, printed as JSON.

* ``rate_limit``: a queue limited to R msg/s (and, separately, a per-key limit), consumed by
  two ``tidings worker`` processes; measured rate against the limit.
* ``ordering``: draining N messages with one worker, ordered queue (P partitions, K keys)
  against a plain queue, same no-op handler and concurrency; msg/s.
* ``fairness``: one tenant floods 100,000 messages while another sends 1 msg/s; the quiet
  tenant's wait (publish to handler start) through ``app.flow.fair`` against the same
  tenant on an idle queue and on a plain (unfair) queue.

``--quick`` shrinks every count for a smoke run. The worker processes import this module
as their app (``tidings worker bench.flow:app``), configured by ``BENCH_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tidings import Message, Tidings
from tidings.flow import FairMessage
from tidings.ordering.queue import OrderedQueue
from tidings.ordering.worker import OrderedWorker

from .stats import RESULTS, latency_summary, lazy_app, rounded

ROOT = Path(__file__).resolve().parent.parent
def _worker_app() -> Tidings:
    app = Tidings()
    q = app.queue("limited")
    if os.environ.get("BENCH_RATE"):
        app.flow.rate_limit("bench-rate", os.environ["BENCH_RATE"],
                            burst=int(os.environ.get("BENCH_BURST", "10"))).protect(q)
    if os.environ.get("BENCH_KEY_RATE"):
        app.flow.key_rate_limit("bench-key", os.environ["BENCH_KEY_RATE"],
                                key=lambda m: m.payload["key"]).protect(q)
    starts = f"{app.settings.key_prefix}:bench:starts"

    @q.handler(concurrency=32)
    async def handle(msg: Message) -> None:
        await app.broker.client.rpush(starts, json.dumps([time.time(), msg.payload["key"]]))

    return app


__getattr__ = lazy_app(_worker_app)  # bench.flow:app for the worker process


async def _drop(app: Tidings) -> None:
    client = app.broker.client
    keys = [k async for k in client.scan_iter(match=f"{app.settings.key_prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i:i + 500])


def _fresh(url: str, **kwargs: Any) -> Tidings:
    return Tidings(url, key_prefix=f"bench-flow-{uuid.uuid4().hex[:8]}", **kwargs)


# -- rate limits -----------------------------------------------------------------------


async def _run_limited(url: str, env: dict[str, str], payloads: list[dict[str, Any]]
                       ) -> list[list[Any]]:
    """Two worker processes consume ``payloads``; returns [start time, key] per call."""
    app = _fresh(url)
    await app.connect()
    q = app.queue("limited")
    full_env = {**os.environ, **env, "TIDINGS_REDIS_URL": url,
                "TIDINGS_KEY_PREFIX": app.settings.key_prefix, "TIDINGS_LOG_LEVEL": "ERROR",
                "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", "from tidings.cli import main; main()", "worker",
               "bench.flow:app"]
    procs = [subprocess.Popen(command, env=full_env, cwd=ROOT,  # noqa: ASYNC220
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]
    key = f"{app.settings.key_prefix}:bench:starts"
    try:
        while True:  # until both workers are up
            if await app.broker.client.zcard(q.keys.consumers) >= 2:
                break
            await asyncio.sleep(0.05)
        await q.publish_many(payloads)
        deadline = time.monotonic() + 300
        while await app.broker.client.llen(key) < len(payloads):
            if time.monotonic() > deadline:
                raise TimeoutError("rate-limited drain did not finish")
            await asyncio.sleep(0.05)
        return [json.loads(x) for x in await app.broker.client.lrange(key, 0, -1)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        await _drop(app)
        await app.close()


async def rate_limit(url: str, quick: bool) -> dict[str, Any]:
    rate, burst, n = 200.0, 10, (600 if quick else 2000)
    calls = await _run_limited(url, {"BENCH_RATE": f"{rate:g}/s", "BENCH_BURST": str(burst)},
                               [{"key": "-", "n": i} for i in range(n)])
    starts = sorted(c[0] for c in calls)
    measured = (n - 1 - burst) / (starts[-1] - starts[burst])  # after the initial burst
    # The token bucket's promise: no window of W seconds holds more than rate * W + burst.
    worst = max(bisect.bisect_left(starts, t + 1.0) - i for i, t in enumerate(starts))
    key_rate, per_key, keys = 5.0, (6 if quick else 15), 8
    calls = await _run_limited(url, {"BENCH_KEY_RATE": f"{key_rate:g}/s"},
                               [{"key": f"k{k}", "n": i} for i in range(per_key)
                                for k in range(keys)])
    rates, min_gap = [], float("inf")
    for k in range(keys):
        ts = sorted(c[0] for c in calls if c[1] == f"k{k}")
        rates.append((len(ts) - 1) / (ts[-1] - ts[0]))
        min_gap = min(min_gap, *(b - a for a, b in itertools.pairwise(ts)))
    return {
        "queue": {"limit_per_s": rate, "burst": burst, "messages": n, "workers": 2,
                  "measured_per_s": rounded(measured, 2),
                  "error_pct": rounded((measured / rate - 1) * 100, 2),
                  "max_in_any_1s": worst, "bound_1s": rate + burst},
        "per_key": {"limit_per_s": key_rate, "keys": keys, "messages_per_key": per_key,
                    "workers": 2, "measured_per_s_mean": rounded(sum(rates) / keys, 3),
                    "min_gap_s": rounded(min_gap, 4), "limit_gap_s": 1 / key_rate},
    }


# -- ordering --------------------------------------------------------------------------


def _count_to(n: int) -> tuple[Callable[[Message], Awaitable[None]], asyncio.Event]:
    """A no-op handler and an event it sets at the ``n``-th message: both queues in a
    comparison get the very same per-message work."""
    done = asyncio.Event()
    seen = 0

    async def handle(msg: Message) -> None:
        nonlocal seen
        seen += 1
        if seen == n:
            done.set()

    return handle, done


async def ordering(url: str, quick: bool) -> dict[str, Any]:
    n, keys, partitions, concurrency = (5_000 if quick else 30_000), 1000, 16, 64
    items = [(f"key-{i % keys}", {"i": i}) for i in range(n)]
    result: dict[str, Any] = {"messages": n, "keys": keys, "partitions": partitions,
                              "concurrency": concurrency, "workers": 1}

    app = _fresh(url)
    plain = app.queue("plain")
    handle, done = _count_to(n)
    plain.handler(concurrency=concurrency)(handle)
    await plain.publish_many([p for _, p in items])
    started = time.perf_counter()
    async with app.worker():
        await asyncio.wait_for(done.wait(), 300)
    result["unordered_msg_per_s"] = round(n / (time.perf_counter() - started))
    await _drop(app)
    await app.close()

    app = _fresh(url)
    ordered = OrderedQueue(app, "ordered", partitions=partitions)
    handle, done = _count_to(n)
    ordered.handler(concurrency=concurrency)(handle)
    for i in range(0, n, 1000):
        await ordered.publish_many(items[i:i + 1000])
    started = time.perf_counter()
    async with OrderedWorker(app, [ordered]):
        await asyncio.wait_for(done.wait(), 300)
    result["ordered_msg_per_s"] = round(n / (time.perf_counter() - started))
    result["ordered_vs_unordered"] = rounded(result["ordered_msg_per_s"]
                                             / result["unordered_msg_per_s"], 3)
    await _drop(app)
    await app.close()
    return result


# -- fairness --------------------------------------------------------------------------


async def _quiet_waits(url: str, mode: str, flood: int, quiet: int, interval: float
                       ) -> dict[str, Any]:
    """``mode``: idle (no flood), fair (flood through app.flow.fair), plain (no fairness)."""
    app = _fresh(url)
    q = app.queue("notify")
    fair = app.flow.fair(q) if mode != "plain" else None
    waits: list[float] = []
    flood_done = 0

    @q.handler(concurrency=16)
    async def handle(msg: Message) -> None:
        nonlocal flood_done
        if msg.payload["tenant"] == "quiet":
            waits.append(time.time() - msg.payload["at"])
        else:
            flood_done += 1
        await asyncio.sleep(0.004)  # the downstream call

    await app.connect()
    if flood and fair is not None:
        for i in range(0, flood, 1000):
            await fair.publish_many([FairMessage({"tenant": "big", "at": 0.0}, "big")
                                     for _ in range(min(1000, flood - i))])
    elif flood:
        await q.publish_many([{"tenant": "big", "at": 0.0} for _ in range(flood)])
    started = time.perf_counter()
    async with app.worker():
        for _ in range(quiet):
            payload = {"tenant": "quiet", "at": time.time()}
            if fair is not None:
                await fair.publish(payload, tenant="quiet")
            else:
                await q.publish(payload)
            await asyncio.sleep(interval)
        while True:
            if len(waits) >= quiet:
                break
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
    await _drop(app)
    await app.close()
    summary = {k: rounded(v, 1) for k, v in latency_summary(waits).items()}
    return {"quiet_messages": quiet, **summary,
            "flood_processed_meanwhile": flood_done, "seconds": rounded(seconds, 1)}


async def fairness(url: str, quick: bool) -> dict[str, Any]:
    flood, quiet = (20_000, 8) if quick else (100_000, 30)
    return {
        "flood_messages": flood, "quiet_rate_per_s": 1.0, "handler_ms": 4, "concurrency": 16,
        "idle": await _quiet_waits(url, "idle", 0, 10, 0.2),
        "fair": await _quiet_waits(url, "fair", flood, quiet, 1.0),
        "plain_queue": await _quiet_waits(url, "plain", flood, 3 if quick else 5, 1.0),
    }


MEASUREMENTS = {"rate_limit": rate_limit, "ordering": ordering, "fairness": fairness}


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.flow", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("TIDINGS_BENCH_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--only", choices=list(MEASUREMENTS), action="append")
    parser.add_argument("--output", type=Path, default=RESULTS / "flow.json",
                        help="where to write the JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"redis_url": args.redis_url, "quick": args.quick}
    for name in args.only or list(MEASUREMENTS):
        print(f"running {name} ...", file=sys.stderr)
        out[name] = await MEASUREMENTS[name](args.redis_url, args.quick)
    text = json.dumps(out, indent=2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))
