"""``python -m bench.sweep``: drain rate by concurrency, for choosing the defaults.

One worker drains a backlog with the handler's and the worker's concurrency both set to
each candidate, for a no-op handler (what the engine itself costs) and for an I/O-bound
one that waits ``--io-ms`` per message (a provider call). Median msg/s of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tidings import Message, Tidings

from .stats import RESULTS, median, rounded

CANDIDATES = (8, 16, 32, 64, 128, 256, 512)


async def drain(url: str, concurrency: int, io_s: float, n: int) -> float:
    """msg/s of one worker draining ``n`` messages."""
    prefix = f"bench-sweep-{uuid.uuid4().hex[:8]}"
    app = Tidings(url, key_prefix=prefix)
    q = app.queue("sweep")
    done = asyncio.Event()
    count = 0

    @q.handler(concurrency=concurrency)
    async def handle(msg: Message) -> None:
        nonlocal count
        if io_s:
            await asyncio.sleep(io_s)
        count += 1
        if count == n:
            done.set()

    try:
        await q.publish_many({"to": "user@example.com", "i": i} for i in range(n))
        started = time.perf_counter()
        async with app.worker(concurrency=concurrency):
            await asyncio.wait_for(done.wait(), 600)
            elapsed = time.perf_counter() - started
        return n / elapsed
    finally:
        client = app.broker.client
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await app.close()


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("TIDINGS_BENCH_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--io-ms", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="one round, fewer messages")
    parser.add_argument("--output", type=Path, default=RESULTS / "sweep.json")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    out: dict[str, Any] = {"redis_url": args.redis_url, "io_ms": args.io_ms, "rounds": rounds}
    for label, io_s in (("noop", 0.0), ("io", args.io_ms / 1000)):
        figures: dict[str, float] = {}
        for c in CANDIDATES:
            # Enough messages for about two seconds at the rate this concurrency allows.
            n = 20_000 if not io_s else int(min(20_000, max(500, 2 * c / io_s)))
            n = n // 4 if args.quick else n
            rates = [await drain(args.redis_url, c, io_s, n) for _ in range(rounds)]
            figures[str(c)] = rounded(median(rates))
            print(f"{label} concurrency={c}: {figures[str(c)]:.0f} msg/s", file=sys.stderr)
        out[label] = {"msg_per_s": figures, "best": max(figures, key=lambda c: figures[c])}
    text = json.dumps(out, indent=2)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    return out


if __name__ == "__main__":
    try:  # the loop a production worker runs on (tidings worker uses uvloop when installed)
        import uvloop
    except ImportError:
        print(json.dumps(asyncio.run(main()), indent=2))
    else:
        print(json.dumps(uvloop.run(main()), indent=2))
