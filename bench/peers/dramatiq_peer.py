"""Dramatiq with its Redis broker, at its defaults (default middleware, JSON encoding).

Messages are acked after the actor returns (the Redis broker keeps a delivered message in
the worker's ack set until then, and requeues it if the worker's heartbeat stops):
at-least-once like tidings. Results are off (no result backend).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from .base import Body, Ctx, Handler, Peer

QUEUE = "job"


def make_broker(ctx: Ctx, handler: Handler) -> tuple[RedisBroker, Any]:
    """A broker whose keys all start with the run's namespace, and the job actor."""
    broker = RedisBroker(url=ctx.url, namespace=ctx.ns)  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)

    def job(body: Body) -> None:
        handler(body)

    return broker, dramatiq.actor(actor_name="job", queue_name=QUEUE, broker=broker)(job)


class DramatiqPeer(Peer):
    name = "dramatiq"
    packages = ("dramatiq", "redis", "hiredis")
    setup = ("RedisBroker(url, namespace=ns), default middleware; actor.send(payload); bulk: "
             "group(messages).run() (no bulk enqueue: one script call per message); "
             "Worker(worker_threads=C), default prefetch (2 x threads); ack after the actor "
             "returns; CLI `dramatiq --processes 1 --threads C` for start-up")

    async def open(self) -> None:
        self.broker, self.actor = make_broker(self.ctx, lambda body: None)

    async def close(self) -> None:
        self.broker.close()

    async def publish(self, body: Body) -> None:
        self.actor.send(body)

    async def publish_batch(self, bodies: list[Body]) -> None:
        group = dramatiq.group([self.actor.message(body) for body in bodies])  # type: ignore[no-untyped-call]
        group.run()  # type: ignore[no-untyped-call]

    def serve(self, handler: Handler) -> None:
        broker, _ = make_broker(self.ctx, handler)
        worker = dramatiq.Worker(broker, worker_threads=self.ctx.concurrency)
        worker.start()
        threading.Event().wait()

    def startup_argv(self) -> list[str]:
        return [sys.executable, "-m", "dramatiq", "bench.peers.apps.dramatiq_app",
                "--processes", "1", "--threads", str(self.ctx.concurrency)]
