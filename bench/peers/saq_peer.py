"""SAQ with its Redis queue.

A job is acked (removed from the active list) after the function returns. Set the same
for every job: ``retries=5`` (SAQ's default 1 never re-runs a job swept from a dead
worker, so it would not be at-least-once) and ``ttl=-1`` (the job record is deleted on
completion: no result kept, as tidings deletes an acked entry).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from saq import Queue, Worker

from .base import Body, Ctx, Handler, Peer, run_async

JOB_OPTIONS: dict[str, Any] = {"retries": 5, "ttl": -1}


def settings(ctx: Ctx, handler: Handler) -> dict[str, Any]:
    """SAQ worker settings: the run's queue (every key carries its name) and the job."""

    async def job(_: Any, *, body: Body) -> None:
        handler(body)

    return {"queue": Queue.from_url(ctx.url, name=ctx.ns), "functions": [("job", job)],
            "concurrency": ctx.concurrency}


class SaqPeer(Peer):
    name = "saq"
    packages = ("saq", "redis", "hiredis")
    setup = ("Queue.from_url(url, name=ns); enqueue('job', body=payload, retries=5, ttl=-1); "
             "bulk: no bulk enqueue, so a chunk of enqueue calls gathered (SAQ caps them at "
             "20 in flight); Worker(concurrency=C): C tasks each blocked in BLMOVE; job record "
             "deleted on completion; CLI `saq` for start-up")

    async def open(self) -> None:
        self.queue = Queue.from_url(self.ctx.url, name=self.ctx.ns)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def publish(self, body: Body) -> None:
        await self.queue.enqueue("job", body=body, **JOB_OPTIONS)

    async def publish_batch(self, bodies: list[Body]) -> None:
        await asyncio.gather(*[self.queue.enqueue("job", body=b, **JOB_OPTIONS)
                               for b in bodies])

    def serve(self, handler: Handler) -> None:
        async def main() -> None:
            worker = Worker(**settings(self.ctx, handler))
            await worker.queue.connect()
            await worker.start()

        run_async(main())

    def startup_argv(self) -> list[str]:
        return [sys.executable, "-m", "saq", "bench.peers.apps.saq_app.settings"]
