"""``python -m bench.cluster``: publish and drain throughput on Redis Clusters of 1, 2 and 3
primaries, printed as JSON (bench/results/cluster.json).

For each cluster size, a local cluster is started (tests/cluster.py, the embedded
valkey-server), then:

* ``publish``: ``--procs`` producer processes publish ``--messages`` messages spread over
  ``--queues`` queues (``publish_many`` chunks of 100, every queue at once); msg/s from the
  start barrier to the last producer done.
* ``drain``: as many worker processes (``app.worker()``, no-op handler) drain them; msg/s
  from the start barrier to the last message handled.
* per shard: CPU seconds each primary used in each phase (``INFO cpu``, user + sys), and
  the CPU seconds of the client processes, to tell whether the shards or the clients (on
  this machine, the same 2 cores) were the limit.

And once, on one primary: the hot path through tidings' per-slot channel against
redis-py's RedisCluster (``execute_command`` and its pipelines) used as the channel, same
publishes, in the same run (``channel``).

``--quick``: fewer messages and queues, one round.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from .stats import RESULTS, median, rounded, write_result

ROOT = Path(__file__).resolve().parent.parent


def _cluster_module() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))  # tests/cluster.py imports tests/servers.py
    import cluster

    return cluster


def _queues(count: int) -> list[str]:
    return [f"q{i}" for i in range(count)]


def _publisher(url: str, prefix: str, queues: list[str], count: int, barrier: Any,
               results: Any) -> None:
    from tidings import Tidings

    async def main() -> None:
        app = Tidings(url, key_prefix=prefix)
        handles = [app.queue(name) for name in queues]
        await app.connect()
        per_queue = count // len(handles)

        async def fill(q: Any) -> None:
            for start in range(0, per_queue, 100):
                await q.publish_many([{"n": i} for i in range(start, min(per_queue,
                                                                         start + 100))])

        await asyncio.to_thread(barrier.wait)
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(fill(q) for q in handles))
        results.put((time.perf_counter() - started, time.process_time() - cpu))
        await app.close()

    asyncio.run(main())


def _drainer(url: str, prefix: str, queues: list[str], handled: Any, stop: Any,
             barrier: Any, results: Any) -> None:
    from tidings import Message, Tidings

    async def main() -> None:
        app = Tidings(url, key_prefix=prefix)
        seen = [0]
        for name in queues:
            @app.queue(name).handler(concurrency=32)
            async def handle(msg: Message) -> None:
                seen[0] += 1
        await app.connect()
        await asyncio.to_thread(barrier.wait)
        cpu, told = time.process_time(), 0
        async with app.worker():
            while not stop.is_set():
                await asyncio.sleep(0.02)
                with handled.get_lock():
                    handled.value += seen[0] - told
                told = seen[0]
        results.put((0.0, time.process_time() - cpu))
        await app.close()

    asyncio.run(main())


def _shard_cpu(ports: list[int]) -> list[float]:
    out = []
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port) as node:
            info = node.info("cpu")
        out.append(float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))
    return out


def _phase(ctx: Any, target: Any, args: tuple[Any, ...], procs: int, ports: list[int],
           wait_done: Any = None) -> dict[str, Any]:
    barrier, results = ctx.Barrier(procs + 1, timeout=120), ctx.Queue()
    workers = [ctx.Process(target=target, args=(*args, barrier, results)) for _ in range(procs)]
    for w in workers:
        w.start()
    barrier.wait()
    cpu_before, started = _shard_cpu(ports), time.perf_counter()
    if wait_done is not None:
        wait_done()
    replies = [results.get(timeout=600) for _ in workers]
    elapsed = time.perf_counter() - started if wait_done is not None else max(
        r[0] for r in replies)
    cpu_after = _shard_cpu(ports)
    for w in workers:
        w.join(timeout=60)
    return {"seconds": elapsed, "client_cpu_s": sum(r[1] for r in replies),
            "shard_cpu_s": [a - b for a, b in zip(cpu_after, cpu_before, strict=True)]}


def _one_size(ctx: Any, url: str, ports: list[int], messages: int, queues: int,
              procs: int) -> dict[str, Any]:
    prefix, names = f"bench{uuid.uuid4().hex[:8]}", _queues(queues)
    count = messages // procs // queues * queues  # per producer, a whole number per queue
    total = count * procs
    publish = _phase(ctx, _publisher, (url, prefix, names, count), procs, ports)
    handled, stop = ctx.Value("q", 0), ctx.Event()

    def until_drained() -> None:
        deadline = time.monotonic() + 300
        while handled.value < total and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        if handled.value < total:
            raise RuntimeError(f"drained {handled.value} of {total} in 300 s")

    drain = _phase(ctx, _drainer, (url, prefix, names, handled, stop), procs, ports,
                   until_drained)
    return {"messages": total, "publish": publish, "drain": drain,
            "publish_msg_s": total / publish["seconds"], "drain_msg_s": total / drain["seconds"]}


async def _channel_compare(url: str, publishes: int) -> dict[str, Any]:
    """Single publishes (64 at a time) through the per-slot channel, then through redis-py's
    RedisCluster put in its place; msg/s of each."""
    from tidings import Tidings

    app = Tidings(url, key_prefix=f"bench{uuid.uuid4().hex[:8]}")
    q = app.queue("channel")
    await app.connect()
    rates: dict[str, float] = {}
    ours = app.broker._channel
    for name, channel in (("tidings_channel", ours), ("redis_py_cluster", app.broker.client),
                          ("tidings_channel_again", ours)):
        app.broker._channel = channel
        started = time.perf_counter()

        async def some(k: int) -> None:
            for i in range(k):
                await q.publish(i)

        await asyncio.gather(*(some(publishes // 64) for _ in range(64)))
        rates[name] = publishes // 64 * 64 / (time.perf_counter() - started)
    app.broker._channel = ours
    await app.close()
    return {"publishes": publishes // 64 * 64, "msg_s": {k: round(v) for k, v in rates.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--queues", type=int, default=24)
    parser.add_argument("--procs", type=int, default=2, help="producer / worker processes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1,2,3", help="cluster sizes (primaries)")
    parser.add_argument("--quick", action="store_true", help="12,000 messages, one round")
    parser.add_argument("--output", default=str(RESULTS / "cluster.json"))
    args = parser.parse_args(argv)
    messages, rounds = (12_000, 1) if args.quick else (args.messages, args.rounds)
    started, cluster = time.time(), _cluster_module()
    ctx = mp.get_context("spawn")
    sizes: dict[str, Any] = {}
    channel: dict[str, Any] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as work, \
                cluster.running_cluster(Path(work), size) as running:
            ports = [n.port for n in running.nodes]
            runs = [_one_size(ctx, running.url, ports, messages, args.queues, args.procs)
                    for _ in range(rounds)]
            if size == 1:
                channel = asyncio.run(_channel_compare(running.url, messages // 4))
        sizes[str(size)] = _summary(runs)
    base = sizes.get("1")
    for figures in sizes.values():
        if base:
            figures["publish_vs_1"] = rounded(figures["publish_msg_s"] / base["publish_msg_s"], 2)
            figures["drain_vs_1"] = rounded(figures["drain_msg_s"] / base["drain_msg_s"], 2)
    write_result({"benchmark": "cluster", "queues": args.queues, "procs": args.procs,
                  "rounds": rounds, "primaries": sizes, "channel": channel}, started,
                 args.output)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds; the CPU figures of the median round of each phase."""
    out: dict[str, Any] = {"messages": runs[0]["messages"]}
    for phase in ("publish", "drain"):
        ordered = sorted(runs, key=lambda r: r[f"{phase}_msg_s"])
        mid = ordered[len(ordered) // 2][phase]
        out[f"{phase}_msg_s"] = round(median([r[f"{phase}_msg_s"] for r in runs]))
        out[f"{phase}_shard_cpu_s"] = [round(c, 2) for c in mid["shard_cpu_s"]]
        out[f"{phase}_client_cpu_s"] = round(mid["client_cpu_s"], 2)
        out[f"{phase}_seconds"] = round(mid["seconds"], 2)
        out[f"{phase}_shard_cpu_share"] = [round(c / mid["seconds"], 2)
                                           for c in mid["shard_cpu_s"]]
        # CPU per message, all shards together and all clients together: what a machine
        # per shard would have to give (the throughput figures share 2 cores with both).
        n = runs[0]["messages"]
        out[f"{phase}_shard_us_per_msg"] = round(sum(mid["shard_cpu_s"]) / n * 1e6, 1)
        out[f"{phase}_client_us_per_msg"] = round(mid["client_cpu_s"] / n * 1e6, 1)
    return out


if __name__ == "__main__":
    main()
