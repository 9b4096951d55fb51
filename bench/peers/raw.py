"""The floor: the same job written directly in redis-py on one stream.

Publish is one XADD of the msgpack-encoded payload; the worker reads with XREADGROUP
COUNT C BLOCK 1000, runs one task per entry, then acks and deletes the batch in one
pipeline (XACK + XDEL), as bench.core's raw side does. Nothing else: no leases, no
delivery counters, no retries.
"""

from __future__ import annotations

import asyncio

import msgpack
from redis.asyncio import Redis

from .base import Body, Handler, Peer, run_async

GROUP = "bench"


class RawPeer(Peer):
    name = "raw"
    packages = ("redis", "hiredis", "msgpack")
    setup = ("redis-py asyncio: XADD {m: msgpack(payload)}; bulk: pipelined XADD; worker: "
             "XREADGROUP COUNT C BLOCK 1000, a task per entry, pipelined XACK + XDEL after "
             "the batch; start-up: a bare python process (bench.peers.worker)")

    @property
    def stream(self) -> str:
        return f"{self.ctx.ns}:stream"

    async def open(self) -> None:
        self.r = Redis.from_url(self.ctx.url)
        if not await self.r.exists(self.stream):
            await self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)

    async def close(self) -> None:
        await self.r.aclose()

    async def publish(self, body: Body) -> None:
        await self.r.xadd(self.stream, {"m": msgpack.packb(body)})

    async def publish_batch(self, bodies: list[Body]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for body in bodies:
            pipe.xadd(self.stream, {"m": msgpack.packb(body)})
        await pipe.execute()

    def serve(self, handler: Handler) -> None:
        run_async(self.consume(handler))

    async def consume(self, handler: Handler) -> None:
        r, stream = Redis.from_url(self.ctx.url), self.stream

        async def one(fields: dict[bytes, bytes]) -> None:
            handler(msgpack.unpackb(fields[b"m"]))

        while True:
            res = await r.xreadgroup(GROUP, "c1", {stream: ">"}, count=self.ctx.concurrency,
                                     block=1000)
            if not res:
                continue
            entries = res[0][1]
            await asyncio.gather(*[asyncio.create_task(one(f)) for _, f in entries])
            ids = [e[0] for e in entries]
            pipe = r.pipeline(transaction=False)
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
            await pipe.execute()
