"""The worker: fetches with leases, runs handlers, settles each message exactly once.

One :class:`Worker` per process serves any number of queues; each queue gets a
:class:`QueueRunner` with a fetch loop (weighted lanes, bounded prefetch, blocking wait when
idle) and a heartbeat loop (lease renewal, run-time config, reclaiming dead consumers' work).
Acks are coalesced: whatever finished while the previous ack round trip was in flight goes
out in the next one, so acking costs one round trip per batch under load and adds no delay
when idle.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from redis.exceptions import OutOfMemoryError, ResponseError

from .allocation import LaneAllocator, parse_weights
from .broker import TRANSIENT, text
from .events import EventKind
from .message import Message, decode, encode, random_token
from .queue import GROUP, Queue
from .retry import Action, decide
from .scripts import SCRIPTS, Script

if TYPE_CHECKING:
    from .app import Tidings

log = logging.getLogger("tidings.worker")
PROMOTE_LIMIT = 1000
GATE_RECHECK = 0.05  # seconds before asking a gate again that admitted nothing
MAX_IDLE_BLOCK_MS = 5000
BACKGROUND_STOP_GRACE = 5.0  # seconds a cancelled heartbeat or service task gets to end


class FetchGate(Protocol):
    """Decides how many messages a queue's fetch loop may take now (flow control).

    ``admit`` may wait (a paused queue, an open circuit breaker, an empty rate bucket) and
    returns how many of ``free`` slots may be filled; 0 means ask again shortly.
    """

    async def admit(self, queue: Queue, free: int) -> int: ...


WorkerService = Callable[["Worker"], Coroutine[Any, Any, None]]


@dataclass(slots=True, frozen=True)
class HandlerSpec:
    fn: Callable[..., Any]
    is_async: bool
    concurrency: int
    batch_size: int | None
    batch_wait: float

    @classmethod
    def build(cls, fn: Callable[..., Any], concurrency: int, batch_size: int | None,
              batch_wait: timedelta | float) -> HandlerSpec:
        from .errors import ValidationError

        if concurrency < 1:
            raise ValidationError("concurrency", "must be >= 1")
        if batch_size is not None and batch_size < 1:
            raise ValidationError("batch_size", "must be >= 1")
        wait = batch_wait.total_seconds() if isinstance(batch_wait, timedelta) else batch_wait
        return cls(fn, inspect.iscoroutinefunction(fn), concurrency, batch_size, float(wait))


class Backoff:
    """Reconnect pacing: exponential with a cap, reset on success."""

    def __init__(self, base: float = 0.05, cap: float = 5.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    async def wait(self, what: str, exc: BaseException) -> None:
        delay = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        log.warning("%s failed (%s: %s); retrying in %.2fs", what, type(exc).__name__, exc, delay)
        await asyncio.sleep(delay)

    def reset(self) -> None:
        self.failures = 0


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome so asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()


class QueueRunner:
    """Consumes one queue inside a worker."""

    def __init__(self, worker: Worker, queue: Queue) -> None:
        assert queue.handler_spec is not None
        self.worker = worker
        self.queue = queue
        self.spec = queue.handler_spec
        self.config = queue.config
        self.keys = queue.keys
        self.bus = queue.app.events
        self.allocator = LaneAllocator(queue.config.weights)
        self.limit = self.spec.concurrency * (self.spec.batch_size or 1)
        self.running = 0  # messages handed to the handler and not yet finished
        self.in_flight: dict[str, Message] = {}  # leases held: lane+entry id -> message
        self.lost: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.capacity = asyncio.Event()
        self._acks: list[tuple[Message, float]] = []
        self._ack_flusher: asyncio.Task[None] | None = None
        self._batch: list[Message] = []
        self._batch_timer: asyncio.TimerHandle | None = None
        self._backoff = Backoff()
        # The common case (async handler, no timeout, no around_handler middleware) skips
        # two coroutine layers per message.
        self._direct = (self.spec.is_async and self.config.handler_timeout is None
                        and not self.bus.wraps_handlers)
        self._executor = (None if self.spec.is_async else
                          ThreadPoolExecutor(min(self.spec.concurrency, 256),
                                             thread_name_prefix=f"tidings-{queue.name}"))

    @property
    def client(self) -> Any:
        return self.queue.app.broker.client

    def free(self) -> int:
        return min(self.limit - self.running, self.worker.limit - self.worker.running)

    # -- fetching ----------------------------------------------------------------------

    async def fetch_loop(self) -> None:
        args_tail = [PROMOTE_LIMIT, self.config.on_expire.value]
        while not self.worker.stopping:
            free = self.free()
            if free <= 0:
                self.capacity.clear()
                await self.capacity.wait()
                continue
            free = await self._admitted(free)
            if free <= 0:
                await asyncio.sleep(GATE_RECHECK)
                continue
            try:
                delivered, dropped, next_due, last = await SCRIPTS.fetch(
                    self.client, self.keys,
                    [GROUP, self.worker.consumer, *self.allocator.split(free), free, *args_tail])
            except TRANSIENT as exc:
                await self._backoff.wait(f"fetch from {self.queue.name}", exc)
                continue
            except ResponseError as exc:
                await self._refused(f"fetch from {self.queue.name}", exc, self._backoff)
                continue
            self._backoff.reset()
            if dropped:
                self._report_dropped(dropped)
            if delivered:
                self._dispatch(delivered)
            if last and not self.worker.stopping:
                timeout = MAX_IDLE_BLOCK_MS if next_due < 0 else min(MAX_IDLE_BLOCK_MS, next_due)
                await self._wait_for_work(last, max(1, timeout))

    async def _admitted(self, free: int) -> int:
        """How many of ``free`` messages flow control (pause, limits ...) lets us take now."""
        for gate in self.queue.gates:
            free = min(free, await gate.admit(self.queue, free))
            if free <= 0:
                return 0
        return free

    async def _wait_for_work(self, last: list[bytes], timeout_ms: int) -> None:
        """Block until an entry newer than ``last`` lands in a lane or the wake stream.

        Returns early when the worker stops or the timeout passes. The blocked read is then
        abandoned rather than awaited: cancelling it does not interrupt a read on the wire.
        """
        k = self.keys
        streams = {k[0]: last[0], k[1]: last[1], k[2]: last[2], k[9]: last[3]}
        read = asyncio.ensure_future(self.client.xread(streams, block=timeout_ms, count=1))
        stop = asyncio.ensure_future(self.worker.stopped.wait())
        # Our own timer too: the server fires block timeouts only on its cron tick (every
        # 100 ms at the default hz 10), which would make delayed messages that late.
        await asyncio.wait([read, stop], timeout=timeout_ms / 1000,
                           return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not read.done():
            read.cancel()
            read.add_done_callback(_consume)
            return
        error = None if read.cancelled() else read.exception()
        if isinstance(error, TRANSIENT):
            await self._backoff.wait(f"wait on {self.queue.name}", error)
        elif error is not None:
            raise error

    def interrupt(self) -> None:
        """Stop fetching: a blocked wait returns; a fetch in flight completes and dispatches."""
        self.capacity.set()
        self._launch_batch()

    def _dispatch(self, delivered: list[list[Any]]) -> None:
        for lane, sid, token, raw, msg_id in delivered:
            entry_id = text(sid)
            try:
                msg = decode(raw)
            except ValueError as exc:
                self._spawn(self._dead_letter_undecodable(lane, entry_id, token, text(msg_id), exc))
                continue
            msg.entry_id, msg.lane, msg.delivery = entry_id, lane, token
            self.in_flight[f"{lane}{entry_id}"] = msg
            self.running += 1
            self.worker.running += 1
            if self.spec.batch_size is None:
                self._spawn(self._run_one(msg))
            else:
                self._batch.append(msg)
                if len(self._batch) >= self.spec.batch_size:
                    self._launch_batch()
                elif self._batch_timer is None:
                    loop = asyncio.get_running_loop()
                    self._batch_timer = loop.call_later(self.spec.batch_wait, self._launch_batch)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _launch_batch(self) -> None:
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        while self._batch:
            size = self.spec.batch_size or 1
            batch, self._batch = self._batch[:size], self._batch[size:]
            self._spawn(self._run_batch(batch))

    def _finished(self, count: int) -> None:
        self.running -= count
        self.worker.running -= count
        self.capacity.set()
        self.worker.wake_all()

    # -- running handlers --------------------------------------------------------------

    async def _call(self, arg: Message | list[Message]) -> Any:
        if self.spec.is_async:
            call = self.spec.fn(arg)
        else:
            loop = asyncio.get_running_loop()
            call = loop.run_in_executor(self._executor, self.spec.fn, arg)
        if self.config.handler_timeout is None:
            return await call
        return await asyncio.wait_for(call, self.config.handler_timeout)

    async def _run_one(self, msg: Message) -> None:
        bus = self.bus
        if bus.active:
            bus.message_event(EventKind.DELIVERED, msg)
        started = time.perf_counter()
        try:
            if self._direct:
                await self.spec.fn(msg)
            else:
                await bus.call_handler(msg, lambda: self._call(msg))
        except Exception as exc:
            self._finished(1)
            await self._settle_failure_safely(msg, exc, time.perf_counter() - started)
        else:
            self._finished(1)
            self._ack(msg, time.perf_counter() - started)

    async def _run_batch(self, batch: list[Message]) -> None:
        bus = self.bus
        if bus.active:
            for msg in batch:
                bus.message_event(EventKind.DELIVERED, msg)
        started = time.perf_counter()
        try:
            await bus.call_handler(batch, lambda: self._call(batch))
        except Exception as exc:
            for msg in batch:
                if msg.outcome is None:
                    msg.outcome = exc
        duration = time.perf_counter() - started
        self._finished(len(batch))
        for msg in batch:
            if msg.outcome is None:
                self._ack(msg, duration)
            else:
                await self._settle_failure_safely(msg, msg.outcome, duration)

    # -- settling ----------------------------------------------------------------------

    def _ack(self, msg: Message, duration: float) -> None:
        self._acks.append((msg, duration))
        if self._ack_flusher is None:
            self._ack_flusher = asyncio.get_running_loop().create_task(self._flush_acks())

    async def _flush_acks(self) -> None:
        try:
            while self._acks:
                batch, self._acks = self._acks[:2000], self._acks[2000:]
                args: list[Any] = [GROUP]
                for msg, _ in batch:
                    args += (msg.lane, msg.entry_id, msg.delivery, msg.id)
                try:
                    refused = await self._settle_call(SCRIPTS.ack, args)
                except Exception as exc:
                    self._abandon([msg for msg, _ in batch], exc)
                    continue
                refused_at = {i - 1 for i in refused}
                for i, (msg, duration) in enumerate(batch):
                    self._settled(msg, EventKind.ACKED if i not in refused_at else None,
                                  duration=duration)
        finally:
            self._ack_flusher = None

    async def _refused(self, what: str, exc: ResponseError, backoff: Backoff) -> None:
        """The server refused a loop's command: recreate lost groups, else log and back off.

        A worker loop never dies of a server error (a full server refusing writes, a
        restarted one without our groups); it keeps trying, loudly, until the server heals.
        """
        if "NOGROUP" in str(exc):
            await self.queue.app.broker.ensure_groups(self.queue)
            return
        log.error("%s refused by the server: %s", what, exc)
        await backoff.wait(what, exc)

    async def _settle_call(self, script: Script, args: list[Any]) -> list[int]:
        """Run a settle script, retrying through connection trouble and a full server."""
        backoff = Backoff()
        while True:
            try:
                result: list[int] = await script(self.client, self.keys, args)
                return result
            except (*TRANSIENT, OutOfMemoryError) as exc:
                if self.worker.abandon_settles:
                    raise
                await backoff.wait(f"{script.name} on {self.queue.name}", exc)

    def _abandon(self, messages: list[Message], exc: BaseException) -> None:
        """A settle failed for good: stop renewing the leases, so the messages are reclaimed
        and delivered again after the visibility timeout instead of hanging in flight."""
        log.error("could not settle %d message(s) of %s (%s: %s); they will be redelivered "
                  "when their lease expires", len(messages), self.queue.name,
                  type(exc).__name__, exc)
        for msg in messages:
            self.in_flight.pop(f"{msg.lane}{msg.entry_id}", None)

    async def _settle_failure_safely(self, msg: Message, exc: BaseException,
                                     duration: float) -> None:
        try:
            await self._settle_failure(msg, exc, duration)
        except Exception as error:
            self._abandon([msg], error)

    def _settled(self, msg: Message, kind: EventKind | None, **extra: Any) -> None:
        key = f"{msg.lane}{msg.entry_id}"
        self.in_flight.pop(key, None)
        if kind is None:
            self._lease_lost(key, msg)
        elif self.bus.active:
            self.bus.message_event(kind, msg, **extra)

    def _lease_lost(self, key: str, msg: Message) -> None:
        if key in self.lost:
            return
        self.lost.add(key)
        log.warning("lease lost for message %s on %s (delivery %s): it was reclaimed; "
                    "its settle is refused", msg.id, self.queue.name, msg.delivery)
        self.worker.lease_lost += 1
        if self.bus.active:
            self.bus.message_event(EventKind.LEASE_LOST, msg)

    async def _settle_failure(self, msg: Message, exc: BaseException, duration: float) -> None:
        decision = decide(msg, exc, self.config)
        base = [GROUP]
        if decision.action is Action.DEAD_LETTER:
            args = [*base, msg.lane, msg.entry_id, msg.delivery, decision.reason,
                    decision.error_json]
            refused = await self._settle_call(SCRIPTS.dead_letter, args)
            kind = EventKind.DEAD_LETTERED
        else:
            retry = decision.action is Action.RETRY
            kind = EventKind.RETRIED if retry else EventKind.SNOOZED
            if retry:
                msg.attempts += 1
            args = [*base, kind.value, msg.lane, msg.entry_id, msg.delivery, msg.id, encode(msg),
                    "" if msg.expires_at_ms is None else msg.expires_at_ms,
                    int(decision.delay * 1000)]
            refused = await self._settle_call(SCRIPTS.retry, args)
        self._settled(msg, None if refused else kind, duration=duration,
                      delay=decision.delay, reason=decision.reason,
                      error=f"{type(exc).__name__}: {exc}")

    async def _dead_letter_undecodable(self, lane: int, entry_id: str, token: int, msg_id: str,
                                       exc: Exception) -> None:
        error = orjson.dumps({"type": "UndecodableEnvelope", "message": str(exc)}).decode()
        await self._settle_call(SCRIPTS.dead_letter,
                                [GROUP, lane, entry_id, token, "undecodable", error])
        log.error("entry %s in %s is not a tidings envelope; dead-lettered as undecodable",
                  entry_id, self.queue.name)
        if self.bus.active:
            from .events import Event

            self.bus.emit(Event(EventKind.DEAD_LETTERED, self.queue.name, msg_id,
                                reason="undecodable", error=str(exc)))

    async def release_unfinished(self) -> int:
        """Hand back leased messages whose handler did not finish, for immediate redelivery."""
        held = [m for k, m in self.in_flight.items() if k not in self.lost]
        if not held:
            return 0
        args: list[Any] = [GROUP, EventKind.RELEASED.value]
        for msg in held:
            args += (msg.lane, msg.entry_id, msg.delivery, msg.id, encode(msg),
                     "" if msg.expires_at_ms is None else msg.expires_at_ms, 0)
        refused = {i - 1 for i in await self._settle_call(SCRIPTS.retry, args)}
        for i, msg in enumerate(held):
            self._settled(msg, None if i in refused else EventKind.RELEASED)
        return len(held) - len(refused)

    def _report_dropped(self, dropped: list[list[Any]]) -> None:
        for kind, msg_id, lane, raw in dropped:
            reason = text(kind)
            log.warning("message %s on %s %s", text(msg_id), self.queue.name,
                        "expired" if reason == "expired" else "is poison: dead-lettered")
            if not self.bus.active:
                continue
            try:
                msg = decode(raw)
            except ValueError:
                msg = Message(text(msg_id), self.queue.name, None)
            msg.lane = lane
            self.bus.message_event(
                EventKind.EXPIRED if reason == "expired" else EventKind.DEAD_LETTERED, msg,
                reason=reason if reason == "poison" else f"expired ({self.config.on_expire})")

    # -- heartbeat, config, reclaim ----------------------------------------------------

    async def heartbeat(self) -> None:
        items = list(self.in_flight.items())
        args: list[Any] = [GROUP, self.worker.consumer]
        for _, msg in items:
            args += (msg.lane, msg.entry_id, msg.delivery)
        lost, config = await SCRIPTS.extend(self.client, self.keys, args)
        for index in lost:
            key, msg = items[index - 1]
            if key in self.in_flight:
                self._lease_lost(key, msg)
        settings = dict(zip(config[::2], config[1::2], strict=True))
        weights = parse_weights(settings.get(b"weights"))
        self.allocator.set_weights(weights or self.config.weights)

    async def reclaim(self) -> None:
        if self.worker.stopping:
            return
        vt_ms = int(self.config.visibility_timeout * 1000)
        free = max(0, self.free())
        if free and self.queue.gates:
            # Reclaimed messages are deliveries too: a paused or rate-limited queue must
            # not take them behind its gates' back. Gates may spend (rate tokens), so ask
            # them only for what a reclaim can take now.
            reclaimable = await self._reclaimable(free, vt_ms)
            free = await self._admitted(reclaimable) if reclaimable else 0
        # Even with nothing to take, the script still removes dead consumers.
        delivered, dropped, removed = await SCRIPTS.reclaim(
            self.client, self.keys,
            [GROUP, self.worker.consumer, vt_ms, free, self.config.max_deliveries,
             self.config.on_expire.value, max(3 * vt_ms, 10_000)])
        if dropped:
            self._report_dropped(dropped)
        if delivered:
            log.info("reclaimed %d expired leases on %s", len(delivered), self.queue.name)
            self._dispatch(delivered)
        for name in removed:
            log.info("removed dead consumer %s from %s", text(name), self.queue.name)

    async def _reclaimable(self, limit: int, vt_ms: int) -> int:
        """How many (up to ``limit``) entries have gone unrenewed past the lease."""
        pipe = self.client.pipeline(transaction=False)
        for lane_key in self.keys[:3]:
            pipe.xpending_range(lane_key, GROUP, "-", "+", limit, idle=vt_ms)
        return sum(len(found) for found in await pipe.execute())

    # The steps are looked up on each call (not bound once), so a replaced method applies.
    async def heartbeat_loop(self) -> None:
        await self._every(min(10.0, self.config.visibility_timeout / 3),
                          lambda: self.heartbeat(), "heartbeat")

    async def reclaim_loop(self) -> None:
        # Apart from the heartbeat: reclaiming passes the fetch gates, which may wait (a
        # pause, a rate limit), and a late heartbeat would cost this worker its leases.
        await self._every(self.config.visibility_timeout / 2, lambda: self.reclaim(),
                          "reclaim")

    async def _every(self, interval: float, step: Callable[[], Awaitable[None]],
                     what: str) -> None:
        backoff = Backoff()
        while True:
            try:
                await step()
                backoff.reset()
            except TRANSIENT as exc:
                await backoff.wait(f"{what} on {self.queue.name}", exc)
                continue
            except ResponseError as exc:
                await self._refused(f"{what} on {self.queue.name}", exc, backoff)
                continue
            await asyncio.sleep(interval)

    async def deregister(self) -> None:
        """Leave the consumer group, unless we still hold entries (then reclaim gets them)."""
        consumer = self.worker.consumer
        pipe = self.client.pipeline(transaction=False)
        for lane_key in self.keys[:3]:
            pipe.xpending_range(lane_key, GROUP, "-", "+", 1, consumername=consumer)
        held = sum(len(r) for r in await pipe.execute())
        if held:
            log.warning("%s still holds %d entries of %s; they will be reclaimed", consumer,
                        held, self.queue.name)
            return
        pipe = self.client.pipeline(transaction=False)
        for lane_key in self.keys[:3]:
            pipe.xgroup_delconsumer(lane_key, GROUP, consumer)
        pipe.zrem(self.keys[10], consumer)
        await pipe.execute()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class Worker:
    """Runs the handlers of one or more queues until stopped.

    ``await worker.run()`` runs until :meth:`stop` (or SIGTERM/SIGINT with
    ``install_signal_handlers``): it then stops fetching, lets in-flight handlers finish
    within ``shutdown_grace`` seconds, hands back what did not finish for immediate
    redelivery, and returns.
    """

    def __init__(self, app: Tidings, queues: Sequence[str] | None = None, *,
                 concurrency: int | None = None, shutdown_grace: float | None = None,
                 consumer_name: str | None = None,
                 install_signal_handlers: bool = False) -> None:
        from .errors import ValidationError

        self.app = app
        names = list(queues) if queues is not None else [
            name for name, q in app.queues.items() if q.handler_spec is not None]
        self.queues = [app.get_queue(name) for name in names]
        missing = [q.name for q in self.queues if q.handler_spec is None]
        if missing:
            raise ValidationError("queues", f"no handler registered for {', '.join(missing)}")
        if not self.queues and not app.worker_services:
            raise ValidationError("queues", "no queue has a handler; nothing to run")
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
        self._started = asyncio.Event()

    def wake_all(self) -> None:
        if len(self.runners) > 1:
            for runner in self.runners:
                runner.capacity.set()

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
        for runner in self.runners:
            await self.app.broker.ensure_groups(runner.queue)
            await runner.heartbeat()
        self.app.flow  # noqa: B018 - installs the pause gate, so every worker obeys a pause
        # Services (the schedule ticker, flow control) live and die with the worker; they
        # start first so the gates they install apply from the first fetch.
        services = [loop.create_task(service(self)) for service in self.app.worker_services]
        await asyncio.sleep(0)
        fetchers = [loop.create_task(r.fetch_loop()) for r in self.runners]
        heartbeats = [loop.create_task(job()) for r in self.runners
                      for job in (r.heartbeat_loop, r.reclaim_loop)] + services
        log.info("worker %s consuming %s", self.consumer, ", ".join(q.name for q in self.queues))
        self._started.set()
        waiter = loop.create_task(self.stopped.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait([waiter, *fetchers, *heartbeats],
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
            await self._drain(fetchers, heartbeats)
        if failure is not None:
            raise failure

    async def _drain(self, fetchers: list[asyncio.Task[None]],
                     heartbeats: list[asyncio.Task[None]]) -> None:
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
                while runner._ack_flusher is not None:
                    await runner._ack_flusher
                released = await runner.release_unfinished()
                if released:
                    log.info("handed back %d unfinished messages of %s", released,
                             runner.queue.name)
                await runner.deregister()
            except TRANSIENT as exc:
                log.error("could not settle on shutdown (%s); unsettled messages will be "
                          "reclaimed after their visibility timeout", exc)
            runner.close()
        for task in heartbeats:
            task.cancel()
        if heartbeats:
            # Bounded: a task that swallows its cancellation (a service's bug, a client
            # call that does not give way) must not keep the process from exiting.
            _done, stuck = await asyncio.wait(heartbeats, timeout=BACKGROUND_STOP_GRACE)
            if stuck:
                log.error("%d background tasks did not stop within %.0fs; abandoning them",
                          len(stuck), BACKGROUND_STOP_GRACE)
                for task in stuck:
                    task.add_done_callback(_consume)

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
