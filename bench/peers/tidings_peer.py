"""tidings: the code being measured, on its production path at default settings."""

from __future__ import annotations

import sys
from pathlib import Path

from tidings import Message, Queue, Tidings

from .base import Body, Ctx, Handler, Peer, run_async

QUEUE = "job"


def make_app(ctx: Ctx, handler: Handler) -> tuple[Tidings, Queue]:
    """The app a tidings worker runs: one queue whose handler passes the payload on."""
    app = Tidings(ctx.url, key_prefix=ctx.ns)
    queue = app.queue(QUEUE)

    @queue.handler(concurrency=ctx.concurrency)
    async def job(msg: Message) -> None:
        handler(msg.payload)

    return app, queue


class TidingsPeer(Peer):
    name = "tidings"
    packages = ("tidings", "redis", "hiredis")
    setup = ("Tidings(url, key_prefix=ns), one queue; publish(payload) at normal priority "
             "without idempotency key; publish_many(chunk); worker(concurrency=C) with "
             "handler(concurrency=C); leased delivery, ack after the handler (lease-checked "
             "ack script, entry deleted); CLI `tidings worker` for start-up")

    async def open(self) -> None:
        self.app = Tidings(self.ctx.url, key_prefix=self.ctx.ns)
        await self.app.connect()
        self.queue = self.app.queue(QUEUE)

    async def close(self) -> None:
        await self.app.close()

    async def publish(self, body: Body) -> None:
        await self.queue.publish(body)

    async def publish_batch(self, bodies: list[Body]) -> None:
        await self.queue.publish_many(bodies, chunk_size=len(bodies))

    def serve(self, handler: Handler) -> None:
        async def main() -> None:
            app, queue = make_app(self.ctx, handler)
            await app.connect()
            try:
                await app.worker([queue.name], concurrency=self.ctx.concurrency).run()
            finally:
                await app.close()

        run_async(main())

    def startup_argv(self) -> list[str]:
        cli = Path(sys.executable).with_name("tidings")
        return [str(cli), "worker", "bench.peers.apps.tidings_app:app",
                "--concurrency", str(self.ctx.concurrency)]
