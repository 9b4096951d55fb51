"""``python -m bench.scale``: drain throughput with 1, 2, 4 and 8 worker processes on one
queue, printed as JSON (and written to bench/results/scale.json).

Each point: a queue pre-filled with more messages than the window can drain, N
``tidings worker bench.scale:app`` processes (a no-op handler, ``--concurrency`` each),
and once all N have registered, the acknowledged count read from the queue's own
counters at the start and the end of a ``--window`` seconds window (start-up and the
empty tail are outside it). The same N processes of the raw client
(``XREADGROUP COUNT c`` + ``XACK`` in a loop, redis-py, no envelope) run the same window
against a raw stream beside it: how much of the curve is tidings and how much the
machine and the one server. ``--rounds`` rounds per point, the medians reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from tidings import Message, Tidings

from .stats import RESULTS, lazy_app, median, rounded, write_result

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "scale"
RAW_GROUP = "raw"


def _worker_app() -> Tidings:
    app = Tidings()
    q = app.queue(QUEUE)

    @q.handler(concurrency=int(os.environ.get("BENCH_CONCURRENCY", "16")))
    async def handle(msg: Message) -> None:
        return None

    return app


__getattr__ = lazy_app(_worker_app)  # bench.scale:app for the worker processes


async def raw_consumer(url: str, stream: str, count: int) -> None:
    """The raw side: read ``count`` at a time, acknowledge them, for ever."""
    client = Redis.from_url(url)
    name = f"raw-{os.getpid()}"
    while True:
        reply = await client.xreadgroup(RAW_GROUP, name, {stream: ">"}, count=count, block=1000)
        for _, entries in reply or ():
            if entries:
                await client.xack(stream, RAW_GROUP, *[e[0] for e in entries])


def _spawn(command: list[str], env: dict[str, str], n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(command, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(n)]


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def _drop(client: Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.unlink(*keys[i:i + 500])


async def _at_least(count: Awaitable[int], bound: int) -> bool:
    return await count >= bound


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 120) -> None:
    """Poll ``check`` (another process's state) until true."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the worker processes did not register")
        await asyncio.sleep(0.05)


async def _window(count: Any, window: float) -> float:
    """Messages per second that ``count()`` grew by over ``window`` seconds."""
    start, t0 = await count(), time.monotonic()
    await asyncio.sleep(window)
    return (await count() - start) / (time.monotonic() - t0)


async def tidings_point(url: str, procs: int, concurrency: int, fill: int,
                        window: float) -> float:
    prefix = f"bench-scale-{uuid.uuid4().hex[:8]}"
    app = Tidings(url, key_prefix=prefix)
    q = app.queue(QUEUE)
    await app.connect()
    env = {**os.environ, "TIDINGS_REDIS_URL": url, "TIDINGS_KEY_PREFIX": prefix,
           "TIDINGS_LOG_LEVEL": "ERROR", "BENCH_CONCURRENCY": str(concurrency),
           "PYTHONPATH": str(ROOT)}
    for start in range(0, fill, 5000):
        await q.publish_many({"i": i} for i in range(start, min(fill, start + 5000)))
    running: list[subprocess.Popen[bytes]] = []
    try:
        running = _spawn([str(Path(sys.executable).parent / "tidings"), "worker",
                          "bench.scale:app", "--summary-every", "0"], env, procs)
        await _until(lambda: _at_least(app.broker.client.zcard(q.keys.consumers), procs))

        async def acked() -> int:
            counters = (await q.stats()).counters
            return sum(counters.get(f"acked:{lane}", 0) for lane in range(3))

        rate = await _window(acked, window)
        if (await q.stats()).depth == 0:
            raise RuntimeError(f"the queue ran dry inside the window ({rate:.0f}/s): "
                               f"raise --fill ({fill})")
        return rate
    finally:
        _stop(running)
        await _drop(app.broker.client, prefix)
        await app.close()


async def raw_point(url: str, procs: int, concurrency: int, fill: int, window: float) -> float:
    client = Redis.from_url(url)
    stream = f"bench-scale-raw-{uuid.uuid4().hex[:8]}:s"
    await client.xgroup_create(stream, RAW_GROUP, id="0", mkstream=True)
    for start in range(0, fill, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(fill, start + 5000)):
            pipe.xadd(stream, {"m": f'{{"i": {i}}}'})
        await pipe.execute()
    code = (f"import asyncio; from bench.scale import raw_consumer; "
            f"asyncio.run(raw_consumer({url!r}, {stream!r}, {concurrency}))")
    running = _spawn([sys.executable, "-c", code], {**os.environ, "PYTHONPATH": str(ROOT)}, procs)
    try:
        async def joined() -> bool:
            return len(await client.xinfo_consumers(stream, RAW_GROUP)) >= procs

        await _until(joined)

        async def acked() -> int:
            info = await client.xinfo_groups(stream)
            return fill - int(info[0].get("lag") or 0) - int(info[0]["pending"])

        return await _window(acked, window)
    finally:
        _stop(running)
        await client.unlink(stream)
        await client.aclose()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    points = []
    for procs in args.procs:
        tid, raw = [], []
        for _ in range(args.rounds):
            tid.append(await tidings_point(args.redis_url, procs, args.concurrency, args.fill,
                                           args.window))
            raw.append(await raw_point(args.redis_url, procs, args.concurrency, args.fill,
                                       args.window))
        points.append({"processes": procs, "tidings_per_s": round(median(tid)),
                       "raw_per_s": round(median(raw)),
                       "tidings_rounds": [round(x) for x in tid],
                       "raw_rounds": [round(x) for x in raw]})
    base = points[0]["tidings_per_s"] or 1
    for point in points:
        point["speedup"] = rounded(point["tidings_per_s"] / base, 2)
    return {"benchmark": "scale", "redis_url": args.redis_url.split("@")[-1],
            "concurrency_per_process": args.concurrency, "window_s": args.window,
            "rounds": args.rounds, "points": points}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get(
        "TIDINGS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--procs", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2, 4, 8])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fill", type=int, default=150_000)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS / "scale.json"))
    args = parser.parse_args(argv)
    started = time.time()
    write_result(asyncio.run(measure(args)), started, args.output)


if __name__ == "__main__":
    main()
