"""The worker process: runs the handlers of one or more queues until stopped."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core.errors import ValidationError
from ..core.ids import random_token
from ..engine.connection import TRANSIENT
from .backoff import consume
from .isolation import Isolation
from .runner import QueueRunner

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost

log = logging.getLogger("tidings.worker")
BACKGROUND_STOP_GRACE = 5.0  # seconds a cancelled heartbeat or service task gets to end


class Worker:
    """Runs the handlers of one or more queues until stopped.

    ``await worker.run()`` runs until :meth:`stop` (or SIGTERM/SIGINT with
    ``install_signal_handlers``): it then stops fetching, lets in-flight handlers finish
    within ``shutdown_grace`` seconds, hands back what did not finish for immediate
    redelivery, and returns.
    """

    def __init__(self, app: ExtensionHost, queues: Sequence[str] | None = None, *,
                 concurrency: int | None = None, shutdown_grace: float | None = None,
                 consumer_name: str | None = None,
                 install_signal_handlers: bool = False) -> None:
        self.app = app
        names = list(queues) if queues is not None else [
            name for name, q in app.queues.items() if q.handler_spec is not None]
        self.queues = [app.get_queue(name) for name in names]
        missing = [q.name for q in self.queues if q.handler_spec is None]
        if missing:
            raise ValidationError("queues", f"no handler registered for {', '.join(missing)}")
        if not self.queues and not app.middleware.runs_in_workers:
            raise ValidationError("queues", "no queue has a handler; nothing to run")
        if concurrency is not None and (type(concurrency) is not int or concurrency < 1):
            raise ValidationError("concurrency", f"must be an int >= 1, got {concurrency!r}")
        if shutdown_grace is not None and not (
                isinstance(shutdown_grace, (int, float)) and 0 <= shutdown_grace < 86_400):
            raise ValidationError("shutdown_grace", f"must be 0 to 86400 seconds, got "
                                  f"{shutdown_grace!r}")
        self.limit = concurrency or app.settings.worker_concurrency
        self.shutdown_grace = (app.settings.shutdown_grace if shutdown_grace is None
                               else shutdown_grace)
        self.consumer = consumer_name or f"{socket.gethostname()}:{os.getpid()}:{random_token()}"
        self.install_signal_handlers = install_signal_handlers
        self.running = 0
        self.lease_lost = 0
        self.stopping = False
        self.abandon_settles = False
        self.runners: list[QueueRunner] = []
        self.stopped = asyncio.Event()
        self.isolation = Isolation(self)
        self._started = asyncio.Event()

    @property
    def queue_names(self) -> list[str]:
        return [q.name for q in self.queues]

    def wake_all(self, force: bool = False) -> None:
        """Let every runner look at its capacity again (one runner's wake is its own)."""
        if force or len(self.runners) > 1:
            for runner in self.runners:
                runner.capacity.set()

    def fetch_loop_age(self) -> float | None:
        """Seconds since the stalest fetch loop last went round; None without fetch loops.

        A loop waiting for a handler slot counts as current: the handlers hold it, and
        ``handler_timeout`` bounds them. Read by health checks (``/livez``).
        """
        if not self.runners:
            return None
        now = self.app.clock.monotonic()
        return max(0.0 if r.awaiting_slot else now - r.looped_at for r in self.runners)

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        self.stopping = True
        self.stopped.set()
        for runner in self.runners:
            runner.interrupt()

    async def started(self) -> None:
        await self._started.wait()

    async def run(self) -> None:
        await self.app.connect()
        loop = asyncio.get_running_loop()
        if self.install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        self.runners = [QueueRunner(self, q) for q in self.queues]
        await asyncio.gather(*(self._join(runner) for runner in self.runners))
        chain = self.app.middleware
        # Middleware start first, so what they install applies from the first fetch; their
        # worker loops (the schedule ticker, ordered queues) live and die with the worker.
        await chain.worker_started(self)
        services = [loop.create_task(job) for job in chain.worker_loops(self)]
        await asyncio.sleep(0)
        fetchers = [loop.create_task(r.fetch_loop()) for r in self.runners]
        background = [loop.create_task(job()) for r in self.runners
                      for job in r.background_jobs()] + services
        log.info("worker %s consuming %s", self.consumer, ", ".join(q.name for q in self.queues))
        self._started.set()
        waiter = loop.create_task(self.stopped.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait([waiter, *fetchers, *background],
                                         return_when=asyncio.FIRST_COMPLETED)
            if not self.stopping:
                # A loop ended on its own: a bug, not a server problem (those are retried).
                # Running on without it would hold leases it never renews; stop instead.
                failed = next(t for t in done if t is not waiter)
                failure = (failed.exception() if not failed.cancelled()
                           else RuntimeError("worker loop cancelled"))
                log.critical("worker loop died (%r); stopping the worker", failure)
        finally:
            waiter.cancel()
            self.stop()
            await self._drain(fetchers, background)
        if failure is not None:
            raise failure

    async def _join(self, runner: QueueRunner) -> None:
        """Join the queue's consumer group and announce ourselves (queues side by side)."""
        await self.app.broker.ensure_groups(runner.keys.lanes)
        await runner.heartbeat()

    async def _drain(self, fetchers: list[asyncio.Task[None]],
                     background: list[asyncio.Task[None]]) -> None:
        await asyncio.gather(*fetchers, return_exceptions=True)
        for runner in self.runners:
            runner.interrupt()  # flush batches gathered by the last fetch
        tasks = [t for r in self.runners for t in r.tasks]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.shutdown_grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d handlers did not finish within %.1fs; handing their messages "
                            "back", len(pending), self.shutdown_grace)
                await asyncio.gather(*pending, return_exceptions=True)
        self.abandon_settles = True
        for runner in self.runners:
            try:
                await runner.settler.flushed()
                released = await runner.release_unfinished()
                if released:
                    log.info("handed back %d unfinished messages of %s", released,
                             runner.queue.name)
                await runner.deregister()
            except TRANSIENT as exc:
                log.error("could not settle on shutdown (%s); unsettled messages will be "
                          "reclaimed after their visibility timeout", exc)
            runner.close()
        await self._stop_background(background)
        await self.app.middleware.worker_stopped(self)

    async def _stop_background(self, background: list[asyncio.Task[None]]) -> None:
        for task in background:
            task.cancel()
        if not background:
            return
        # Bounded: a task that swallows its cancellation (a service's bug, a client call
        # that does not give way) must not keep the process from exiting.
        done, stuck = await asyncio.wait(background, timeout=BACKGROUND_STOP_GRACE)
        for task in done:  # a second loop that failed with the first: already reported
            if not task.cancelled() and task.exception() is not None:
                log.debug("background task also failed: %r", task.exception())
        if stuck:
            log.error("%d background tasks did not stop within %.0fs; abandoning them",
                      len(stuck), BACKGROUND_STOP_GRACE)
            for task in stuck:
                task.add_done_callback(consume)

    async def __aenter__(self) -> Worker:
        self._task = asyncio.get_running_loop().create_task(self.run())
        started = asyncio.ensure_future(self._started.wait())
        await asyncio.wait([started, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            started.cancel()
            self._task.result()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await self._task
