"""Celery with its Redis broker (kombu's Redis transport).

``task_acks_late``: a message is acked after the task returns (Celery's default acks
before it runs, which is at-most-once); the Redis transport redelivers a message unacked
for its visibility timeout. The result backend is off (``task_ignore_result``), and so
are events, remote control, mingle and gossip. Every key carries the run's namespace
through the transport's ``global_keyprefix``.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery

from .base import Body, Ctx, Handler, Peer

QUEUE = "job"


def make_app(ctx: Ctx, handler: Handler) -> tuple[Celery, Any]:
    """A Celery app on the run's key prefix, and the job task."""
    app = Celery(ctx.ns, broker=ctx.url, set_as_current=True)
    app.conf.update(
        broker_transport_options={"global_keyprefix": f"{ctx.ns}:"},
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE, task_acks_late=True, task_ignore_result=True,
        task_send_sent_event=False, worker_send_task_events=False,
        worker_enable_remote_control=False, worker_hijack_root_logger=False,
        worker_redirect_stdouts=False)

    @app.task(name="job")  # type: ignore[untyped-decorator]
    def job(body: Body) -> None:
        handler(body)

    return app, job


# The worker options the CLI (start-up) and the in-process worker (drain, e2e) share.
WORKER_FLAGS = ["--pool", "threads", "--without-mingle", "--without-gossip",
                "--without-heartbeat", "--loglevel", "WARNING", "--queues", QUEUE]


class CeleryPeer(Peer):
    name = "celery"
    packages = ("celery", "kombu", "redis", "hiredis")
    setup = ("Celery(broker=url, global_keyprefix=ns), task_acks_late, result backend off, "
             "no events/remote control/mingle/gossip/heartbeat; task.apply_async((payload,)); "
             "bulk: no bulk send, so apply_async for each with one shared producer; worker: "
             "threads pool, concurrency C, default prefetch multiplier (4); CLI `celery "
             "worker` for start-up")

    async def open(self) -> None:
        self.app, self.job = make_app(self.ctx, lambda body: None)

    async def close(self) -> None:
        self.app.close()

    async def publish(self, body: Body) -> None:
        self.job.apply_async((body,))

    async def publish_batch(self, bodies: list[Body]) -> None:
        with self.app.producer_or_acquire() as producer:
            for body in bodies:
                self.job.apply_async((body,), producer=producer)

    def serve(self, handler: Handler) -> None:
        app, _ = make_app(self.ctx, handler)
        app.worker_main(["worker", *WORKER_FLAGS, "--concurrency", str(self.ctx.concurrency)])

    def startup_argv(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "bench.peers.apps.celery_app", "worker",
                *WORKER_FLAGS, "--concurrency", str(self.ctx.concurrency)]
