"""One queue inside a worker: the fetch loop and the handler calls.

The fetch loop takes only as many messages as there are free handler slots (weighted over
the lanes), blocks on the lanes when they run dry, and starts reclaimed messages before it
fetches new ones. Every message handed to a handler ends settled (see settle.py), whatever
raises on the way: a slot is never leaked and a message never stays leased by a live
worker for ever. Handlers that run past the queue's ``handler_timeout`` are cancelled by a
watchdog and count as failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from ..core.errors import EnvelopeError, UnsupportedEnvelopeError
from ..core.events import EventKind
from ..core.message import Message, decode
from ..core.stored import text
from ..engine.connection import TRANSIENT, raise_if_denied
from ..queues import scripts
from ..queues.queue import Queue
from .allocation import LaneAllocator
from .backoff import Backoff
from .invoke import HandlerInvoker
from .leases import Leases
from .settle import Settler

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("tidings.worker")
PROMOTE_LIMIT = 1000
GATE_RECHECK = 0.05  # seconds before asking a gate again that admitted nothing
MAX_IDLE_BLOCK_MS = 5000


class QueueRunner:
    """Consumes one queue inside a worker."""

    def __init__(self, worker: Worker, queue: Queue) -> None:
        assert queue.handler_spec is not None
        self.worker = worker
        self.queue = queue
        self.spec = queue.handler_spec
        self.config = queue.config
        self.keys = queue.keys
        self.bus = queue.app.middleware
        self.clock = queue.app.clock
        self.allocator = LaneAllocator(queue.config.weights)
        self.retry = queue.config.retry  # with the run-time override, set by each heartbeat
        self.bad_retry: bytes | None = None  # an unreadable override, warned about once
        self.limit = self.spec.concurrency * (self.spec.batch_size or 1)
        self.running = 0  # messages handed to the handler and not yet finished
        self.in_flight: dict[str, Message] = {}  # leases held: lane+entry id -> message
        self.settling: set[str] = set()  # leases whose settle is on its way to the server
        self.lost: set[tuple[str, int]] = set()  # (key, delivery) reported lost, unsettled
        self.reclaimed: deque[Message] = deque()  # leased, waiting for a slot: they go first
        self.tasks: set[asyncio.Task[None]] = set()
        self.capacity = asyncio.Event()
        self.woken = False  # set by wake_fetch(): the next wait for work returns at once
        self._blocked_read: asyncio.Future[Any] | None = None
        # Its own connection: a blocked XREAD must not hold up the shared channel's calls.
        self.waiter = queue.app.broker.new_channel(MAX_IDLE_BLOCK_MS / 1000)
        self.settler = Settler(self)
        self.leases = Leases(self)
        self.invoker = HandlerInvoker(self.spec, self.bus, self.clock,
                                      queue.config.handler_timeout, queue.name)
        self.looped_at = self.clock.monotonic()  # when the fetch loop last went round (health)
        self.awaiting_slot = False  # the fetch loop waits for a handler to free a slot
        self._batch: list[Message] = []
        self._batch_timer: asyncio.TimerHandle | None = None
        self._backoff = Backoff(self.clock)

    @property
    def client(self) -> Any:
        """redis-py's pool: for blocking reads and typed commands."""
        return self.queue.app.broker.client

    @property
    def channel(self) -> Any:
        """The shared pipelined connection: for the script calls of every loop."""
        return self.queue.app.broker.channel

    def free(self) -> int:
        if self.worker.isolation.active:
            return 0
        return min(self.limit - self.running, self.worker.limit - self.worker.running)

    async def _wait_capacity(self) -> None:
        self.capacity.clear()
        self.awaiting_slot = True
        try:
            await self.capacity.wait()
        finally:
            self.awaiting_slot = False

    # -- fetching ----------------------------------------------------------------------

    async def fetch_loop(self) -> None:
        on_expire = self.config.on_expire.value
        isolation = self.worker.isolation
        while not self.worker.stopping:
            self.looped_at = self.clock.monotonic()
            self.woken = False  # what woke us is looked at below, before the next wait
            if isolation.wanted_by is self:
                await self._run_suspect()
                continue
            if self.reclaimed and self._start_reclaimed():
                continue
            free = self.free()
            if free <= 0 or isolation.holding_back:
                await self._wait_capacity()
                continue
            free = await self.admitted(free)
            if free <= 0:
                await self.clock.sleep(GATE_RECHECK)
                continue
            try:
                delivered, dropped, next_due, last = await scripts.fetch(
                    self.channel, self.keys, consumer=self.worker.consumer,
                    quotas=self.allocator.split(free), capacity=free,
                    promote_limit=PROMOTE_LIMIT, on_expire=on_expire)
            except TRANSIENT as exc:
                await self._backoff.wait(f"fetch from {self.queue.name}", exc)
                continue
            except ResponseError as exc:
                await self.refused(f"fetch from {self.queue.name}", exc, self._backoff)
                continue
            self._backoff.reset()
            if dropped:
                self.report_dropped(dropped)
            for msg in self._take(delivered):
                self._start(msg)
            if last and not self.worker.stopping and not self.reclaimed:
                timeout = MAX_IDLE_BLOCK_MS if next_due < 0 else min(MAX_IDLE_BLOCK_MS, next_due)
                await self._wait_for_work(last, max(1, timeout))

    async def admitted(self, free: int) -> int:
        """How many of ``free`` messages the middleware (pause, limits ...) lets us take."""
        if not self.bus.gates:
            return free
        return await self.bus.admit(self.queue.name, free)

    async def _wait_for_work(self, last: list[bytes], timeout_ms: int) -> None:
        """Block until an entry newer than ``last`` lands in a lane or the wake stream.

        Returns early when the worker stops, a reclaim hands over messages, or the timeout
        passes. A read cut short is abandoned with its connection: the server would answer
        it only at the timeout, and the next read must not queue behind it.
        """
        if self.woken:
            return
        k = self.keys
        read = self.waiter.execute_command(
            "XREAD", "COUNT", 1, "BLOCK", timeout_ms, "STREAMS", k.high, k.normal, k.low,
            k.wake, *last)
        self._blocked_read = read = asyncio.ensure_future(read)
        # Our own timer too: the server fires block timeouts only on its cron tick (every
        # 100 ms at the default hz 10), which would make delayed messages that late.
        timer = asyncio.get_running_loop().call_later(timeout_ms / 1000, read.cancel)
        try:
            await read
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are cancelled, not just the read
            self.waiter.reset()
        except TRANSIENT as exc:
            await self._backoff.wait(f"wait on {self.queue.name}", exc)
        finally:
            timer.cancel()
            self._blocked_read = None

    def wake_fetch(self) -> None:
        """Wake a fetch loop blocked on the lanes: reclaimed work, a suspect, shutdown."""
        self.woken = True
        read = self._blocked_read
        if read is not None and not read.done():
            read.cancel()

    def interrupt(self) -> None:
        """Stop fetching: a blocked wait returns; a fetch in flight completes and dispatches."""
        self.capacity.set()
        self.wake_fetch()
        self._launch_batch()

    def _take(self, delivered: list[list[Any]]) -> list[Message]:
        """Decode and validate delivered entries and lease them; park what is not valid."""
        taken: list[Message] = []
        for lane, sid, token, raw, msg_id in delivered:
            entry_id = text(sid)
            try:
                msg = decode(raw)
                if msg_id and msg.id != text(msg_id):
                    raise EnvelopeError("id", f"{msg.id!r} differs from the entry's id "
                                        f"{text(msg_id)!r}")
            except Exception as exc:  # any failure to read an entry is the entry's fault
                reason = ("unsupported_version" if isinstance(exc, UnsupportedEnvelopeError)
                          else "undecodable")
                self._spawn(self.settler.dead_letter_entry(lane, entry_id, token, text(msg_id),
                                                           reason, exc))
                continue
            msg.entry_id, msg.lane, msg.delivery = entry_id, lane, token
            self.in_flight[f"{lane}{entry_id}"] = msg
            taken.append(msg)
        return taken

    def take_reclaimed(self, delivered: list[list[Any]]) -> None:
        self.reclaimed.extend(self._take(delivered))
        if self.reclaimed:
            self.wake_fetch()
            self.capacity.set()

    def _start_reclaimed(self) -> bool:
        """Start reclaimed messages before fetching; True if any started."""
        started = False
        while self.reclaimed and self.free() > 0:
            msg = self.reclaimed.popleft()
            if self.in_flight.get(f"{msg.lane}{msg.entry_id}") is msg:  # else: lease lost
                self._start(msg)
                started = True
        return started

    async def _run_suspect(self) -> None:
        """Make the process idle, then claim one suspect message and run it alone."""
        isolation = self.worker.isolation
        self.awaiting_slot = True  # it waits on handlers, which handler_timeout bounds
        try:
            while not isolation.idle():
                self._start_reclaimed()
                if not await isolation.until_idle():
                    return
            if await self.admitted(1) <= 0:
                return  # paused or held back: the next reclaim sees the suspect again
            try:
                delivered, dropped, _, _ = await self.leases.claim(1, suspect=True)
            except (*TRANSIENT, ResponseError) as exc:
                log.warning("could not claim a suspect message of %s (%s); trying again at "
                            "the next reclaim", self.queue.name, exc)
                return
            if dropped:
                self.report_dropped(dropped)
            for msg in self._take(delivered):
                isolation.active = True
                log.info("running message %s of %s alone (delivery %d): a worker died "
                         "holding it", msg.id, self.queue.name, msg.delivery)
                self.running += 1
                self.worker.running += 1
                task = self._spawn(self._run_one(msg) if self.spec.batch_size is None
                                   else self._run_batch([msg]))
                # On shutdown stop waiting: the drain gives the task its grace period.
                stop = asyncio.ensure_future(self.worker.stopped.wait())
                await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
        finally:
            self.awaiting_slot = False
            isolation.done()

    def _start(self, msg: Message) -> None:
        self.running += 1
        self.worker.running += 1
        if self.spec.batch_size is None:
            self._spawn(self._run_one(msg))
            return
        self._batch.append(msg)
        if len(self._batch) >= self.spec.batch_size:
            self._launch_batch()
        elif self._batch_timer is None:
            loop = asyncio.get_running_loop()
            self._batch_timer = loop.call_later(self.spec.batch_wait, self._launch_batch)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

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
        self.worker.isolation.handler_finished()

    # -- running handlers --------------------------------------------------------------

    async def _run_one(self, msg: Message) -> None:
        error, duration = await self.invoker.run(msg)
        self._finished(1)
        if error is None:
            self.settler.ack(msg, duration)
        else:
            await self.settler.fail(msg, error, duration)

    async def _run_batch(self, batch: list[Message]) -> None:
        error, duration = await self.invoker.run(batch)
        self._finished(len(batch))
        for msg in batch:
            outcome = msg.outcome if msg.outcome is not None else error
            if outcome is None:
                self.settler.ack(msg, duration)
            else:
                await self.settler.fail(msg, outcome, duration)

    # -- settling, leases: the parts live in settle.py and leases.py -------------------

    def lease_lost(self, key: str, msg: Message, settled: bool = False) -> None:
        """The lease of ``msg`` moved on (reclaimed): stop renewing it, report it once.

        ``settled``: this is the refused settle of the message, its last word.
        """
        if self.in_flight.get(key) is msg:
            del self.in_flight[key]
            self.settling.discard(key)
        mark = (key, msg.delivery)
        if mark in self.lost:
            if settled:
                self.lost.discard(mark)
            return
        if not settled:
            self.lost.add(mark)
        log.warning("lease lost for message %s on %s (delivery %s): it was reclaimed; "
                    "its settle is refused", msg.id, self.queue.name, msg.delivery)
        self.worker.lease_lost += 1
        if self.bus.active:
            self.bus.message_event(EventKind.LEASE_LOST, msg)

    def report_dropped(self, dropped: list[list[Any]]) -> None:
        for kind, msg_id, lane, raw in dropped:
            reason = text(kind)
            log.warning("message %s on %s %s", text(msg_id), self.queue.name, {
                "expired": "expired", "poison": "is poison: dead-lettered"}.get(
                    reason, f"dead-lettered as {reason}"))
            if not self.bus.active:
                continue
            try:
                msg = decode(raw)
            except ValueError:
                msg = Message(text(msg_id), self.queue.name, None)
            msg.lane = lane
            self.bus.message_event(
                EventKind.EXPIRED if reason == "expired" else EventKind.DEAD_LETTERED, msg,
                reason=f"expired ({self.config.on_expire})" if reason == "expired" else reason)

    async def refused(self, what: str, exc: ResponseError, backoff: Backoff) -> None:
        """The server refused a loop's command: recreate lost groups, else log and back off.

        A worker loop never dies of a server error (a full server refusing writes, a
        restarted one without our groups); it keeps trying, loudly, until the server heals.
        An ACL refusal is the exception: it raises PermissionDeniedError, which stops the
        worker with that error, since no retry can cure it.
        """
        broker = self.queue.app.broker
        raise_if_denied(exc, broker.user, what)  # an ACL refusal does not heal by retrying
        if "NOGROUP" in str(exc):
            await broker.ensure_groups(self.keys.lanes)
            return
        log.error("%s refused by the server: %s", what, exc)
        await backoff.wait(what, exc)

    # The steps are looked up on each call (not bound once), so a replaced method applies.
    async def heartbeat(self) -> None:
        await self.leases.heartbeat()

    async def reclaim(self) -> None:
        await self.leases.reclaim()

    async def heartbeat_loop(self) -> None:
        await self.leases.every(min(10.0, self.config.visibility_timeout / 3),
                                lambda: self.heartbeat(), "heartbeat")

    async def reclaim_loop(self) -> None:
        await self.leases.every(self.config.visibility_timeout / 2, lambda: self.reclaim(),
                                "reclaim")

    def background_jobs(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        jobs: list[Callable[[], Coroutine[Any, Any, None]]] = [self.heartbeat_loop,
                                                               self.reclaim_loop]
        if self.invoker.timeout is not None:
            jobs.append(self.invoker.watchdog_loop)
        return jobs

    async def release_unfinished(self) -> int:
        return await self.settler.release_unfinished()

    async def deregister(self) -> None:
        await self.leases.deregister()

    def close(self) -> None:
        self.invoker.close()
        self.waiter.reset()
