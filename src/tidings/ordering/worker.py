"""A worker for ordered queues alone (``tidings ordered worker``).

Every :class:`tidings.Worker` of the app runs the app's ordered queues too (each ordered
queue with a handler adds itself to the app's middleware as a worker loop); this one is
for a process that consumes ordered queues and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core.ids import random_token

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost
    from .queue import OrderedQueue

log = logging.getLogger("tidings.ordering")


class OrderedWorker:
    """Runs ordered queues on their own, for an app that has no regular queue to consume::

        async with OrderedWorker(app, [orders]):
            ...
    """

    def __init__(self, app: ExtensionHost, queues: Sequence[OrderedQueue], *,
                 consumer_name: str | None = None, shutdown_grace: float | None = None,
                 install_signal_handlers: bool = False) -> None:
        self.app = app
        self.queues = list(queues)
        self.consumer = consumer_name or f"{socket.gethostname()}:{os.getpid()}:{random_token()}"
        self.grace = app.settings.shutdown_grace if shutdown_grace is None else shutdown_grace
        self.install_signal_handlers = install_signal_handlers
        self.stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        self.stopped.set()

    async def run(self) -> None:
        from .runner import OrderedRunner

        await self.app.connect()
        if self.install_signal_handlers:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        runners = [OrderedRunner(q, self.consumer, shutdown_grace=self.grace)
                   for q in self.queues]
        log.info("ordered worker %s consuming %s", self.consumer,
                 ", ".join(q.name for q in self.queues))
        await asyncio.gather(*(r.run(self.stopped) for r in runners))

    async def __aenter__(self) -> OrderedWorker:
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        if self._task is not None:
            await self._task
