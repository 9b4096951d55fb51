"""Calling a handler: the middleware around it, a thread for a sync one, the time limit.

One :class:`HandlerInvoker` per consumed queue, plain or ordered. It emits the delivered
events, wraps the call in every middleware's ``around_handler``, runs a sync handler in a
thread pool of its concurrency, times the call on the app's clock, and enforces the
queue's ``handler_timeout`` with a watchdog (no timer per message): a call that runs past
it is cancelled and fails with :class:`~tidings.errors.HandlerTimeoutError`.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..core.clock import Clock
from ..core.errors import HandlerTimeoutError
from ..core.events import EventKind
from ..core.message import Message
from ..core.middleware import MiddlewareChain
from ..queues.handlers import HandlerSpec

log = logging.getLogger("tidings.worker")


class HandlerInvoker:
    """Runs the handler of one queue (see the module docstring)."""

    def __init__(self, spec: HandlerSpec, chain: MiddlewareChain, clock: Clock,
                 timeout: float | None, queue: str) -> None:
        self.spec = spec
        self.chain = chain
        self.clock = clock
        self.timeout = timeout
        self.queue = queue
        self.deadlines: dict[asyncio.Task[Any], tuple[float, Message | list[Message]]] = {}
        self.timed_out: set[asyncio.Task[Any]] = set()
        # The common case (async handler, no around_handler middleware) skips two coroutine
        # layers per message.
        self._direct = spec.is_async and not chain.wraps_handlers
        self._executor = (None if spec.is_async else
                          ThreadPoolExecutor(min(spec.concurrency, 256),
                                             thread_name_prefix=f"tidings-{queue}"))

    async def run(self, arg: Message | list[Message]) -> tuple[BaseException | None, float]:
        """Call the handler with ``arg``: (what it raised, or None; seconds it took).

        Raises ``CancelledError`` only for a cancellation that is not the watchdog's (the
        worker shutting down, an ordered partition lost): the message stays held then.
        """
        chain = self.chain
        started = self.clock.monotonic()
        watched = self._watch(arg)
        error: BaseException | None = None
        try:
            if chain.active:
                for msg in (arg if isinstance(arg, list) else (arg,)):
                    chain.message_event(EventKind.DELIVERED, msg)
            if self._direct:
                await self.spec.fn(arg)
            else:
                await chain.call_handler(arg, lambda: self._call(arg))
        except asyncio.CancelledError:
            if watched is None or watched not in self.timed_out:
                raise
            error = HandlerTimeoutError(self.timeout or 0)
        except Exception as exc:
            error = exc
        if watched is not None:
            self._unwatch(watched)
        return error, self.clock.monotonic() - started

    async def _call(self, arg: Message | list[Message]) -> Any:
        if self.spec.is_async:
            return await self.spec.fn(arg)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.spec.fn, arg)

    def _watch(self, what: Message | list[Message]) -> asyncio.Task[Any] | None:
        """Give the running handler call its deadline; returns its task to unwatch."""
        if self.timeout is None:
            return None
        task = asyncio.current_task()
        assert task is not None
        self.deadlines[task] = (self.clock.monotonic() + self.timeout, what)
        return task

    def _unwatch(self, task: asyncio.Task[Any]) -> None:
        """End the call's deadline; take back a cancellation the watchdog sent (the call
        timed out, or the handler swallowed the cancellation)."""
        self.deadlines.pop(task, None)
        if task in self.timed_out:
            self.timed_out.discard(task)
            task.uncancel()

    async def watchdog_loop(self) -> None:
        """Cancel handler calls that run past ``handler_timeout``; they count as failed."""
        assert self.timeout is not None
        interval = min(1.0, max(0.01, self.timeout / 10))
        while True:
            await self.clock.sleep(interval)
            now = self.clock.monotonic()
            for task, (deadline, what) in list(self.deadlines.items()):
                if now < deadline or task in self.timed_out:
                    continue
                self.timed_out.add(task)
                task.cancel()
                label = (f"message {what.id}" if isinstance(what, Message)
                         else f"a batch of {len(what)} messages")
                log.warning("handler of %s on %s ran past handler_timeout (%gs): cancelled, "
                            "it counts as a failed attempt%s", label, self.queue, self.timeout,
                            "" if self.spec.is_async else
                            " (a sync handler's thread cannot be stopped and runs on)")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
