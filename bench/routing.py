"""``python -m bench.routing``: topic publish against direct publish and the raw server cost.

Every figure is messages published per second by ``--tasks`` concurrent publishers in one
process (the calls share the app's pipelined connection), on a fresh key prefix, the
median of ``--rounds`` rounds that run every setup in turn (``--count`` messages in all):

* ``direct_2_queues``: each message published to 2 queues directly (``q.publish`` twice,
  concurrently: one round trip);
* ``topic_1``: a topic with 1 binding, no filter;
* ``topic_10`` / ``topic_100``: 10 (100) bindings, half on other topics, half on the
  topic with a CEL filter each; 2 filters pass, so 2 copies per message;
* ``topic_10_transform``: as ``topic_10``, the 2 copies reshaped (JMESPath + Jinja2);
* ``raw_2_copies``: the server commands ``route.lua`` runs for 2 copies (version check,
  2 x idempotency SET NX, XADD, index HSET, stats HINCRBY, and the routing counters) sent
  as a plain pipeline, no script, no Python planning: the floor.

Also ``propagation_ms``: from a rule change returning to a second app (its own
connection) routing by the new version, over ``--changes`` changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tidings import Tidings

from .stats import RESULTS, latency_summary, median, ratio, rounded

PAYLOAD = {"order_id": 1234, "text": "Your order has shipped",
           "user": {"id": 42, "region": "eu", "sms_opt_in": True, "phone": "+447700900123"}}


def _fresh(url: str) -> Tidings:
    return Tidings(url, key_prefix=f"bench-routing-{uuid.uuid4().hex[:8]}")


async def _drop(app: Tidings) -> None:
    client = app.broker.client
    keys = [k async for k in client.scan_iter(match=f"{app.settings.key_prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i:i + 500])


async def _rate(count: int, tasks: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Messages per second of ``count`` calls of ``one(i)`` over ``tasks`` publishers."""
    async def worker(start: int) -> None:
        for i in range(start, count, tasks):
            await one(i)

    began = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    return count / (time.perf_counter() - began)


async def _bind(app: Tidings, total: int, transform: bool) -> None:
    """``total`` bindings: half on other topics, half on order.* with a filter; 2 pass."""
    rules: list[dict[str, Any]] = []
    for i in range(total):
        if total > 1 and i % 2:
            rules.append({"name": f"other{i}", "topic": f"billing.{i}.#", "queue": f"q{i}"})
            continue
        rule: dict[str, Any] = {"name": f"b{i}", "topic": "order.*", "queue": f"q{i}"}
        if total > 1:
            passes = i in (0, 2)
            rule["filter"] = ("payload.user.region == 'eu'" if passes
                              else f"payload.user.region == 'r{i}'")
            if transform and passes:
                rule["transform"] = {"select": "{to: user.phone, order: order_id}",
                                     "templates": {"text": "Order {{ payload.order_id }} "
                                                           "has shipped"}}
        rules.append(rule)
    await app.topics.replace_rules({"bindings": rules})


async def topic(url: str, count: int, tasks: int, total: int, transform: bool = False
                ) -> float:
    app = _fresh(url)
    async with app:
        await _bind(app, total, transform)
        result = await app.topics.publish("order.shipped", PAYLOAD)
        assert len(result.deliveries) == (1 if total == 1 else 2), result
        rate = await _rate(count, tasks, lambda i: app.topics.publish("order.shipped",
                                                                      PAYLOAD))
        await _drop(app)
    return rate


async def direct(url: str, count: int, tasks: int) -> float:
    app = _fresh(url)
    a, b = app.queue("a"), app.queue("b")
    async with app:
        rate = await _rate(count, tasks, lambda i: asyncio.gather(a.publish(PAYLOAD),
                                                                  b.publish(PAYLOAD)))
        await _drop(app)
    return rate


async def raw(url: str, count: int, tasks: int) -> float:
    """The same writes as route.lua for 2 copies, as plain commands in one pipeline."""
    from tidings.core.message import Message, encode

    app = _fresh(url)
    envelope = encode(Message("01ABCDEFGHJKMNPQRSTVWXYZ00", "q0", PAYLOAD))
    prefix = app.settings.key_prefix
    async with app:
        channel = app.broker.channel  # the same pipelined connection the scripts use

        async def one(i: int) -> None:
            pipe = channel.pipeline()
            pipe.execute_command("GET", f"{prefix}:{{routes}}:version")
            for q in ("q0", "q2"):
                pipe.execute_command("SET", f"{prefix}:{{{q}}}:idem:route:b:{i}", "id", "PX",
                                     3_600_000, "NX", "GET")
                pipe.execute_command("XADD", f"{prefix}:{{{q}}}:normal", "*", "i", f"id{i}",
                                     "m", envelope)
                pipe.execute_command("HSET", f"{prefix}:{{{q}}}:index", f"id{i}", "1:0-1")
                pipe.execute_command("HINCRBY", f"{prefix}:{{{q}}}:stats", "published", 1)
            for name in ("published", "routed", "routed:b0", "routed:b2"):
                pipe.execute_command("HINCRBY", f"{prefix}:{{routes}}:stats", name, 1)
            await pipe.execute()

        rate = await _rate(count, tasks, one)
        await _drop(app)
    return rate


async def propagation(url: str, changes: int) -> dict[str, float]:
    editor = _fresh(url)
    follower = Tidings(url, key_prefix=editor.settings.key_prefix)
    lags = []
    async with editor, follower:
        await follower.topics.start()
        for n in range(changes):
            began = time.perf_counter()
            rules = await editor.topics.bind(f"b{n}", "order.*", f"q{n}")
            await follower.topics.wait_for_version(rules.version)
            lags.append(time.perf_counter() - began)
        await _drop(editor)
    return {k: rounded(v, 2) or 0.0 for k, v in latency_summary(lags).items()}


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.routing",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("TIDINGS_BENCH_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS / "routing.json")
    args = parser.parse_args(argv)
    url, n, t = args.redis_url, args.count, args.tasks
    setups: dict[str, Callable[[int], Awaitable[float]]] = {
        "direct_2_queues": lambda c: direct(url, c, t),
        "topic_1": lambda c: topic(url, c, t, 1),
        "topic_10": lambda c: topic(url, c, t, 10),
        "topic_100": lambda c: topic(url, c, t, 100),
        "topic_10_transform": lambda c: topic(url, c, t, 10, transform=True),
        "raw_2_copies": lambda c: raw(url, c, t),
    }
    # Rounds of every setup in turn, the median of each: a machine whose load changes
    # during the run shifts all of them alike instead of skewing the ratios.
    samples: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.rounds):
        for name, run_setup in setups.items():
            samples[name].append(await run_setup(n // args.rounds))
    rates = {name: median(values) for name, values in samples.items()}
    out: dict[str, Any] = {
        "redis_url": url, "count": n, "tasks": t, "rounds": args.rounds,
        "msgs_per_s": {k: round(v) for k, v in rates.items()},
        "topic_10_vs_direct_2": rounded(ratio(rates["topic_10"], rates["direct_2_queues"])),
        "topic_100_vs_direct_2": rounded(ratio(rates["topic_100"], rates["direct_2_queues"])),
        "topic_10_vs_raw": rounded(ratio(rates["topic_10"], rates["raw_2_copies"])),
        "propagation_ms": await propagation(url, args.changes),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    print(f"bench.routing on {sys.argv[1:] or 'defaults'} ...", file=sys.stderr)
    print(json.dumps(asyncio.run(main()), indent=2))
