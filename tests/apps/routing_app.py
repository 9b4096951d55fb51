"""A producer process for the routing tests: ``python -m tests.apps.routing_app MODE``.

``follow``: load the rules, then print ``version N`` each time the process picks up a
new version (told by the store's channel, no publish involved).
``keyed COUNT``: publish ``{"i": i}`` for i in 0..COUNT-1 with the idempotency key
``order-<i>``, printing ``at <i>`` every 50 (a test kills it and runs it again).
``publish COUNT``: publish COUNT messages to ``order.shipped``, recording each result
(origin id, the rule set version that routed it, the queues of its copies) in the list
``<prefix>:test:routed``, then print ``done``.
Environment: TIDINGS_REDIS_URL, TIDINGS_KEY_PREFIX.
"""

from __future__ import annotations

import asyncio
import sys

import orjson

from tidings import Tidings


async def follow(app: Tidings) -> None:
    await app.topics.start()
    seen = app.topics.version
    print(f"version {seen}", flush=True)
    while True:
        assert seen is not None
        await app.topics.wait_for_version(seen + 1, timeout=3600)
        seen = app.topics.version
        print(f"version {seen}", flush=True)


async def publish(app: Tidings, count: int) -> None:
    key = f"{app.settings.key_prefix}:test:routed"
    print("publishing", flush=True)
    for i in range(count):
        result = await app.topics.publish("order.shipped", {"i": i})
        await app.broker.client.rpush(key, orjson.dumps({
            "id": result.message_id, "i": i, "version": result.version,
            "queues": sorted(result.queues), "unrouted": bool(result.dead_lettered)}))
    print("done", flush=True)


async def keyed(app: Tidings, count: int) -> None:
    for i in range(count):
        await app.topics.publish("order.shipped", {"i": i}, idempotency_key=f"order-{i}")
        if i % 50 == 0:
            print(f"at {i}", flush=True)
    print("done", flush=True)


async def main() -> None:
    app = Tidings()
    async with app:
        if sys.argv[1] == "follow":
            await follow(app)
        elif sys.argv[1] == "keyed":
            await keyed(app, int(sys.argv[2]))
        else:
            await publish(app, int(sys.argv[2]))


if __name__ == "__main__":
    asyncio.run(main())
