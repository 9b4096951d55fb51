"""``python -m bench.overload``: twice the load the workers can take, printed as JSON.

A ``tidings worker`` process runs an I/O-bound handler (it waits ``HANDLER_S`` per
message, like a call to an SMS or push provider). First its capacity R is measured on a
backlog; then a producer offers 2R msg/s for ``--seconds``, one publish per message, 10 %
high, 30 % normal and 60 % low priority, in two setups:

* ``bounded``: ``max_depth`` of two seconds' work with ``on_full="shed_low"``: low messages
  are refused first (``QueueFullError``), high and normal keep their room;
* ``unbounded``: no limit; the low lane backs up for as long as the overload lasts.

Per lane: offered, accepted, refused, processed, lost (accepted but never processed: must be
0) and the end-to-end wait (publish call to handler start) p50/p99/max. The lanes'
depth is sampled for its peak.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tidings import Message, QueueFullError, Tidings

from .stats import RESULTS, latency_summary, lazy_app, rounded

ROOT = Path(__file__).resolve().parent.parent
HANDLER_S = 0.01
HANDLER_CONCURRENCY = 24
LANES = ("high", "normal", "low")
MIX = ("high",) + ("normal",) * 3 + ("low",) * 6  # 10 / 30 / 60 %
def _worker_app() -> Tidings:
    app = Tidings()
    q = app.queue("notify")
    waits: dict[str, list[float]] = {lane: [] for lane in LANES}
    ids: list[str] = []

    @q.handler(concurrency=HANDLER_CONCURRENCY)
    async def handle(msg: Message) -> None:
        waits[msg.payload["lane"]].append(time.time() - msg.payload["ts"])
        ids.append(msg.id)
        await asyncio.sleep(HANDLER_S)

    def dump() -> None:
        Path(os.environ["BENCH_OUT"]).write_text(json.dumps({"waits": waits, "ids": ids}))

    atexit.register(dump)
    return app


__getattr__ = lazy_app(_worker_app)  # bench.overload:app for the worker process


class Run:
    """One worker process and a producer on a fresh key prefix."""

    def __init__(self, url: str, **queue_options: Any) -> None:
        self.prefix = f"bench-overload-{uuid.uuid4().hex[:8]}"
        self.app = Tidings(url, key_prefix=self.prefix)
        self.queue = self.app.queue("notify", **queue_options)
        self.out = Path(f"/tmp/{self.prefix}.json")
        self.url = url
        self.proc: subprocess.Popen[bytes] | None = None

    async def start_worker(self) -> None:
        await self.app.connect()
        env = {**os.environ, "TIDINGS_REDIS_URL": self.url, "TIDINGS_KEY_PREFIX": self.prefix,
               "TIDINGS_LOG_LEVEL": "ERROR", "BENCH_OUT": str(self.out),
               "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for below
            [sys.executable, "-c", "from tidings.cli import main; main()", "worker",
             "bench.overload:app"], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:  # another process: polled, not awaited
            if await self.app.broker.client.zcard(self.queue.keys.consumers):
                break
            await asyncio.sleep(0.05)

    async def depth(self) -> int:
        return (await self.queue.stats()).depth

    async def wait_drained(self) -> None:
        while True:
            stats = await self.queue.stats()
            if not (stats.depth or stats.in_flight or stats.delayed):
                break
            await asyncio.sleep(0.05)

    async def stop_worker(self) -> dict[str, Any]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self.proc.wait, 60)
        result: dict[str, Any] = json.loads(self.out.read_text())
        self.out.unlink()
        return result

    async def close(self) -> None:
        client = self.app.broker.client
        keys = [k async for k in client.scan_iter(match=f"{self.prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i:i + 500])
        await self.app.close()


async def capacity(url: str, n: int) -> float:
    """Messages per second the worker process gets through on a backlog."""
    run = Run(url)
    try:
        await run.start_worker()
        started = time.perf_counter()
        await run.queue.publish_many({"lane": "normal", "ts": time.time()} for _ in range(n))
        await run.wait_drained()
        rate = n / (time.perf_counter() - started)
        await run.stop_worker()
        return rate
    finally:
        await run.close()


async def offer(run: Run, rate: float, seconds: float) -> dict[str, dict[str, Any]]:
    """Publish at ``rate`` msg/s for ``seconds``; what was accepted and refused per lane."""
    offered = dict.fromkeys(LANES, 0)
    accepted: dict[str, list[str]] = {lane: [] for lane in LANES}
    refused = dict.fromkeys(LANES, 0)
    peak = 0
    tick = 0.01
    q = run.queue
    start = time.perf_counter()
    sent = 0

    async def one(lane: str) -> None:
        try:
            accepted[lane].append(await q.publish({"lane": lane, "ts": time.time()},
                                                  priority=lane))
        except QueueFullError:
            refused[lane] += 1

    ticks = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate)
        batch = [MIX[i % len(MIX)] for i in range(sent, due)]
        for lane in batch:
            offered[lane] += 1
        sent = due
        await asyncio.gather(*(one(lane) for lane in batch))
        ticks += 1
        if ticks % 20 == 0:
            peak = max(peak, await run.depth())
        await asyncio.sleep(max(0.0, start + ticks * tick - time.perf_counter()))
    return {"peak_depth": {"all": peak}, **{lane: {
        "offered": offered[lane], "accepted": accepted[lane], "refused": refused[lane]}
        for lane in LANES}}


async def scenario(url: str, rate: float, seconds: float, **options: Any) -> dict[str, Any]:
    run = Run(url, **options)
    try:
        await run.start_worker()
        produced = await offer(run, rate, seconds)
        await run.wait_drained()
        done = await run.stop_worker()
        processed = set(done["ids"])
        out: dict[str, Any] = {"options": {k: str(v) for k, v in options.items()},
                               "peak_depth": produced["peak_depth"]["all"]}
        for lane in LANES:
            side = produced[lane]
            ids = side.pop("accepted")
            waits = done["waits"][lane]
            out[lane] = {**side, "accepted": len(ids), "processed": len(waits),
                         "lost": len(set(ids) - processed),
                         **({k: rounded(v) for k, v in latency_summary(waits).items()}
                            if waits else {})}
        out["processed_twice"] = len(done["ids"]) - len(processed)
        return out
    finally:
        await run.close()


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.overload",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("TIDINGS_BENCH_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    parser.add_argument("--seconds", type=float, default=10.0, help="overload duration")
    parser.add_argument("--quick", action="store_true", help="3 s of overload: a smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS / "overload.json")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    print("measuring capacity ...", file=sys.stderr)
    cap = await capacity(args.redis_url, 2000 if args.quick else 6000)
    rate = 2 * cap
    out: dict[str, Any] = {"redis_url": args.redis_url, "handler_s": HANDLER_S,
                           "handler_concurrency": HANDLER_CONCURRENCY,
                           "capacity_msg_per_s": rounded(cap), "offered_msg_per_s": rounded(rate),
                           "seconds": seconds}
    print("bounded (max_depth, shed_low) ...", file=sys.stderr)
    out["bounded"] = await scenario(args.redis_url, rate, seconds,
                                    max_depth=int(2 * cap), on_full="shed_low")
    print("unbounded ...", file=sys.stderr)
    out["unbounded"] = await scenario(args.redis_url, rate, seconds)
    text = json.dumps(out, indent=2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))
