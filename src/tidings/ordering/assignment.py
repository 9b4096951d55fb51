"""Who owns which partition of an ordered queue, and a worker for ordered queues alone."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import signal
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core.message import random_token

if TYPE_CHECKING:
    from ..app import Tidings
    from .queue import OrderedQueue

log = logging.getLogger("tidings.ordering.queue")


def assign(members: Sequence[str], partitions: int) -> dict[str, set[int]]:
    """Partition owners: each partition's highest-ranked member (by a stable hash of
    member and partition) that still has room under ``ceil(partitions / members)``."""
    out: dict[str, set[int]] = {m: set() for m in members}
    if not members:
        return out
    room = math.ceil(partitions / len(members))
    for p in range(partitions):
        ranked = sorted(members, reverse=True, key=lambda m: hashlib.blake2b(
            f"{m}/{p}".encode(), digest_size=8).digest())
        owner = next(m for m in ranked if len(out[m]) < room)
        out[owner].add(p)
    return out


class OrderedWorker:
    """Runs ordered queues on their own, for an app that has no regular queue to consume::

        async with OrderedWorker(app, [orders]):
            ...
    """

    def __init__(self, app: Tidings, queues: Sequence[OrderedQueue], *,
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

