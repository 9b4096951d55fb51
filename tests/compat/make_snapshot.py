"""Write tests/compat/<release>.json: what a release left in Redis, key by key.

Run it with the *previous release's* code first on the path, against a server of your
own (it uses a fresh key prefix and deletes it afterwards)::

    git archive 5f2fafb src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src python tests/compat/make_snapshot.py redis://127.0.0.1:6379/0 \
        tests/compat/v0.1.0-5f2fafb.json

It publishes a plain, a high-priority, an idempotent and a delayed message, lets a worker
of that release fail one message once (a retry waiting in the delayed set) and
dead-letter another, then dumps every key under the prefix (streams with their entries,
sorted sets with their scores, sets, hashes, strings), values base64-encoded. No consumer
group is kept: a worker of this version creates its own, from the start of each lane.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from tidings import Message, Tidings

FAIL_ONCE = {"k": "retry"}
DEAD = {"k": "dead"}


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


async def dump(client: Any, prefix: str) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    async for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode()
        kind = (await client.type(raw)).decode()
        name = key[len(prefix) + 1:]
        if kind == "stream":
            entries = await client.xrange(raw)
            keys[name] = {"type": kind, "entries": [
                [sid.decode(), {b64(f): b64(v) for f, v in fields.items()}]
                for sid, fields in entries]}
        elif kind == "zset":
            keys[name] = {"type": kind, "members": [
                [b64(m), s] for m, s in await client.zrange(raw, 0, -1, withscores=True)]}
        elif kind == "hash":
            keys[name] = {"type": kind, "fields": {
                b64(f): b64(v) for f, v in (await client.hgetall(raw)).items()}}
        elif kind == "string":
            keys[name] = {"type": kind, "value": b64(await client.get(raw)),
                          "ttl_ms": await client.pttl(raw)}
        elif kind == "set":
            keys[name] = {"type": kind, "members": sorted(
                b64(m) for m in await client.smembers(raw))}
        else:
            raise SystemExit(f"{key}: type {kind} is not dumped yet")
    return keys


async def main(url: str) -> dict[str, Any]:
    prefix = f"compat{uuid.uuid4().hex[:8]}"
    app = Tidings(url, key_prefix=prefix)
    q = app.queue("email", max_attempts=3)
    failed: list[Any] = []
    both_failed = asyncio.Event()

    @q.handler
    async def handle(msg: Message) -> None:
        if msg.payload in (FAIL_ONCE, DEAD):
            failed.append(msg.payload)
            if len(failed) == 2:
                both_failed.set()
            raise RuntimeError("fails in the old release")

    await app.connect()
    ids = {"retry": await q.publish(FAIL_ONCE),
           "dead": await q.publish(DEAD, max_attempts=1)}
    async with app.worker():
        await both_failed.wait()
        await asyncio.sleep(0.5)  # let the settles land
    ids["plain"] = await q.publish({"k": "plain"})
    ids["high"] = await q.publish({"k": "high"}, priority="high")
    ids["idem"] = await q.publish({"k": "idem"}, idempotency_key="order-7:welcome")
    ids["delayed"] = await q.publish({"k": "delayed"}, delay=3600)
    client = app.broker.client
    snapshot = {"release": "0.1.0 (5f2fafb)", "prefix": prefix, "ids": ids,
                "keys": await dump(client, prefix)}
    async for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        await client.delete(raw)
    await app.close()
    return snapshot


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps(asyncio.run(main(sys.argv[1])), indent=1,
                                            sort_keys=True) + "\n")
