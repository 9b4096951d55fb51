"""The one extension interface: a middleware with named hooks, and the chain that runs them.

Metrics, tracing, logging, flow control, schedules, the ledger and audit plug in here
instead of being threaded through the worker. A middleware overrides the hooks it needs;
the chain calls only the overridden ones, so an unused hook costs nothing. The hooks, in
the order a message meets them:

1. ``before_publish(queue, message)``: producer side, for each message about to be
   published, before it is encoded. It may change the message (add a header, encrypt the
   payload) or raise a :class:`~tidings.errors.ValidationError` to refuse it.
   ``around_publish(queue, count, call_next)`` wraps each publish round trip of
   ``count`` messages (one, or a chunk of a batch): the ``before_publish`` calls of its
   messages and the send run inside it (a producer span). It must await ``call_next()``.
2. ``admit(queue, free)``: before each fetch, how many of ``free`` handler slots the queue
   may fill now (0: ask again shortly). It may wait briefly (a paused queue, a rate limit).
   Middleware are asked in the order they were added; the first that admits nothing ends
   the round.
3. ``around_handler(message, call_next)``: wraps each handler call (a message, or a
   batch); the first middleware added is the outermost. It must await ``call_next()``.
4. ``on_event(event)``: every lifecycle event, inline on the event loop: keep it cheap and
   non-blocking. An exception it raises is logged and swallowed; it never changes what
   happens to a message.

And around a worker's life: ``on_worker_start(worker)`` before it fetches anything,
``worker_loop(worker)``, run as a task for as long as the worker runs (a ticker, a
refresher; cancelled at shutdown), and ``on_worker_stop(worker)`` after its drain.
``worker`` is the :class:`tidings.Worker` (typed here by what hooks may rely on).

A middleware with ``innermost = True`` has its hooks run after every other's on the way
in, whenever it was added: message encryption must bind the headers the others add
(its ``before_publish`` last) and hand only the handler the plaintext (its
``around_handler`` innermost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any, Protocol

from .clock import SYSTEM_CLOCK, Clock
from .events import Event, EventKind
from .message import Message

log = logging.getLogger("tidings.middleware")
Call = Callable[[], Awaitable[Any]]


class WorkerView(Protocol):
    """What a middleware may rely on of the worker it runs in."""

    consumer: str
    stopping: bool  # set at SIGTERM (stop()), before the drain begins
    stopped: asyncio.Event
    running: int  # messages handed to handlers and not yet finished

    @property
    def queue_names(self) -> list[str]: ...

    def fetch_loop_age(self) -> float | None:
        """Seconds since the stalest fetch loop went round (None: no fetch loop)."""


class Middleware:
    """Base class of every extension: override the hooks you need (see the module doc)."""

    # True: its hooks run after every other middleware's on the way in, whenever it was
    # added (last before_publish, innermost around_handler): message encryption, which
    # must see the headers the others add and hand the handler its plaintext.
    innermost: bool = False

    def before_publish(self, queue: str, message: Message) -> None:
        """Look at (or change, or refuse) a message about to be published."""

    async def around_publish(self, queue: str, count: int, call_next: Call) -> Any:
        """Wrap a publish round trip of ``count`` messages. Must await call_next()."""
        return await call_next()

    async def admit(self, queue: str, free: int) -> int:
        """How many of ``free`` messages ``queue`` may fetch now."""
        return free

    async def around_handler(self, message: Message | list[Message], call_next: Call) -> Any:
        """Wrap a handler call (tracing spans, context variables). Must await call_next()."""
        return await call_next()

    def on_event(self, event: Event) -> None:
        """Called for every lifecycle event."""

    async def on_worker_start(self, worker: WorkerView) -> None:
        """A worker is about to fetch (install what it must obey)."""

    async def worker_loop(self, worker: WorkerView) -> None:
        """Runs beside the worker for its whole life; cancelled when it stops."""

    async def on_worker_stop(self, worker: WorkerView) -> None:
        """A worker has drained and left its consumer groups."""


def _place(bucket: list[Any], hook: Any, innermost: bool) -> None:
    """Add ``hook`` after the others, but before any innermost one unless it is one."""
    if innermost:
        bucket.append(hook)
        return
    owners = [getattr(h, "__self__", h) for h in bucket]
    first_inner = next((i for i, o in enumerate(owners) if getattr(o, "innermost", False)),
                       len(bucket))
    bucket.insert(first_inner, hook)


def _overrides(item: Middleware, hook: str) -> bool:
    return getattr(type(item), hook) is not getattr(Middleware, hook)


class MiddlewareChain:
    """The middleware of one app, in order; the producer and the worker call it."""

    __slots__ = (
        "_admitters",
        "_around",
        "_around_publish",
        "_listeners",
        "_loops",
        "_publishers",
        "_starters",
        "_stoppers",
        "clock",
        "middleware",
    )

    def __init__(self, middleware: Sequence[Middleware] = (), clock: Clock = SYSTEM_CLOCK
                 ) -> None:
        self.clock = clock
        self.middleware: list[Middleware] = []
        self._listeners: list[Callable[[Event], None]] = []
        self._publishers: list[Callable[[str, Message], None]] = []
        self._admitters: list[Middleware] = []
        self._around: list[Middleware] = []
        self._around_publish: list[Middleware] = []
        self._starters: list[Middleware] = []
        self._loops: list[Middleware] = []
        self._stoppers: list[Middleware] = []
        for item in middleware:
            self.add(item)

    def add(self, item: Middleware) -> None:
        if item in self.middleware:
            return
        self.middleware.append(item)
        if _overrides(item, "on_event"):
            self._listeners.append(item.on_event)
        if _overrides(item, "before_publish"):
            _place(self._publishers, item.before_publish, item.innermost)
        for hook, bucket in (("admit", self._admitters), ("around_handler", self._around),
                             ("around_publish", self._around_publish),
                             ("on_worker_start", self._starters),
                             ("worker_loop", self._loops), ("on_worker_stop", self._stoppers)):
            if _overrides(item, hook):
                _place(bucket, item, item.innermost)

    @property
    def active(self) -> bool:
        """False when nobody listens, so hot paths can skip building events."""
        return bool(self._listeners)

    @property
    def wraps_handlers(self) -> bool:
        return bool(self._around)

    @property
    def wraps_publish(self) -> bool:
        return bool(self._around_publish)

    @property
    def gates(self) -> bool:
        return bool(self._admitters)

    @property
    def publishing(self) -> bool:
        return bool(self._publishers)

    @property
    def runs_in_workers(self) -> bool:
        """True if a middleware has a worker loop (a worker then has work without queues)."""
        return bool(self._loops)

    # -- producer ----------------------------------------------------------------------

    def before_publish(self, queue: str, message: Message) -> None:
        for hook in self._publishers:
            hook(queue, message)

    async def call_publish(self, queue: str, count: int, call: Call) -> Any:
        chain = call
        for item in reversed(self._around_publish):
            chain = partial(item.around_publish, queue, count, chain)
        return await chain()

    # -- events ------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("middleware %r failed on %s", listener, event.kind)

    def message_event(self, kind: EventKind, message: Message, duration: float | None = None,
                      delay: float | None = None, reason: str | None = None,
                      error: str | None = None) -> None:
        # Two of these per message when anything listens: every argument positional.
        if self._listeners:
            self.emit(Event(kind, message.queue, message.id, message.priority.label,
                            message.attempts, message.headers.get("correlation_id"), duration,
                            delay, reason, error, self.clock.time(), message))

    def emit_published(self, queue: str, message_id: str, priority: Any,
                       headers: dict[str, str] | None) -> None:
        self.emit(Event(EventKind.PUBLISHED, queue, message_id, priority.label, 0,
                        (headers or {}).get("correlation_id"), timestamp=self.clock.time()))

    def event(self, kind: EventKind, queue: str, message_id: str, **fields: Any) -> None:
        """Emit an event that is not about a decoded message (an undecodable entry, a
        breaker's transition)."""
        if self._listeners:
            self.emit(Event(kind, queue, message_id, timestamp=self.clock.time(), **fields))

    # -- worker ------------------------------------------------------------------------

    async def admit(self, queue: str, free: int) -> int:
        for item in self._admitters:
            free = min(free, await item.admit(queue, free))
            if free <= 0:
                return 0
        return free

    async def call_handler(self, message: Message | list[Message], call: Call) -> Any:
        if not self._around:
            return await call()
        chain = call
        for item in reversed(self._around):
            chain = partial(item.around_handler, message, chain)
        return await chain()

    async def worker_started(self, worker: WorkerView) -> None:
        for item in self._starters:
            await item.on_worker_start(worker)

    def worker_loops(self, worker: WorkerView) -> list[Coroutine[Any, Any, None]]:
        return [item.worker_loop(worker) for item in self._loops]

    async def worker_stopped(self, worker: WorkerView) -> None:
        for item in self._stoppers:
            try:
                await item.on_worker_stop(worker)
            except Exception:
                log.exception("middleware %r failed when the worker stopped", item)

