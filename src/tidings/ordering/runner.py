"""The worker side of ordered queues: partition ownership, running key heads, settling.

Each worker heartbeats into the queue's member set and computes, from the same sorted
member list every worker reads, which partitions are its own (:func:`assign`: rendezvous
hashing with a per-worker cap, so partitions spread evenly and few move when one worker
joins or leaves). It claims its partitions (a lease with an epoch), renews them every
third of the lease, and hands over the ones now assigned elsewhere only after their
running handlers finished, so a key never runs in two places. A partition whose lease
this worker failed to renew in time is given up at once: its handlers are cancelled,
since another worker may take it over when the lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..core.errors import DeadLetter
from ..core.events import EventKind
from ..core.message import Message, decode, encode
from ..core.stored import text
from ..engine.connection import TRANSIENT
from ..engine.scripts import ScriptCall, run_pipelined
from ..worker.backoff import Backoff, consume
from ..worker.coalesce import Coalescer
from ..worker.invoke import HandlerInvoker
from ..worker.retry import Action, decide
from . import scripts
from .assignment import assign

if TYPE_CHECKING:
    from .queue import OrderedQueue

log = logging.getLogger("tidings.ordering")
IDLE_BLOCK_MS = 500


@dataclass(slots=True)
class Owned:
    """A partition this worker holds: its epoch, when the lease was last renewed."""

    epoch: str
    renewed: float  # the clock's monotonic time when the renewal that succeeded was sent
    draining: bool = False  # assigned elsewhere: take nothing new, release when idle
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


Ack = tuple[int, Owned, str, Message, float]  # partition, owner, key, message, seconds


class OrderedRunner:
    """Runs one ordered queue's handler inside one worker process."""

    def __init__(self, queue: OrderedQueue, consumer: str, *, shutdown_grace: float = 25.0,
                 concurrency: int | None = None) -> None:
        assert queue.handler_spec is not None, "register a handler first"
        self.q = queue
        self.spec = queue.handler_spec
        self.consumer = consumer
        self.grace = shutdown_grace
        self.limit = concurrency or self.spec.concurrency
        self.bus = queue.app.middleware
        self.clock = queue.app.clock
        self.invoker = HandlerInvoker(self.spec, self.bus, self.clock, queue.handler_timeout,
                                      queue.name)
        self.acks: Coalescer[Ack] = Coalescer(self._flush_acks, 1000)
        self.owned: dict[int, Owned] = {}
        self.running = 0
        self.stopping = False
        self._capacity = asyncio.Event()
        self._kick = asyncio.Event()  # new partitions: take from them now
        self._rebalance = asyncio.Event()  # a draining partition went idle: release it now
        # Ends the heartbeat loop. cancel() alone is not enough: on Python 3.11 redis-py's
        # send (asyncio.wait_for) can swallow a cancellation, and the loop would go on.
        self._leaving = asyncio.Event()
        self._wake_id: Any = "0-0"
        self._rotation = 0

    @property
    def client(self) -> Any:
        return self.q.app.broker.client

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then finish (or hand back) work and leave."""
        await self.q.ensure_ready()
        last = await self.client.xrevrange(self.q.wake_key, count=1)
        self._wake_id = last[0][0] if last else "0-0"
        await self._heartbeat()
        loop = asyncio.get_running_loop()
        beat = loop.create_task(self._heartbeat_loop())
        watchdog = (loop.create_task(self.invoker.watchdog_loop())
                    if self.invoker.timeout is not None else None)
        try:
            await self._fetch_loop(stop)
        finally:
            self._leaving.set()
            beat.cancel()  # interrupts a heartbeat in flight; _leaving ends the loop anyway
            await asyncio.gather(beat, return_exceptions=True)
            await self._shutdown()
            if watchdog is not None:
                watchdog.cancel()
                await asyncio.gather(watchdog, return_exceptions=True)
            self.invoker.close()

    # -- taking ------------------------------------------------------------------------

    async def _fetch_loop(self, stop: asyncio.Event) -> None:
        stopped = asyncio.ensure_future(stop.wait())
        backoff = Backoff(self.clock, cap=2.0)
        try:
            while not stop.is_set():
                free = self.limit - self.running
                if free <= 0:
                    self._capacity.clear()
                    await _first(self._capacity.wait(), stopped)
                    continue
                self._kick.clear()
                try:
                    took, next_due = await self._take(free)
                except TRANSIENT as exc:
                    await backoff.wait(f"take from {self.q.name}", exc)
                    continue
                backoff.reset()
                if not took:
                    await self._idle(next_due, stopped)
        finally:
            stopped.cancel()

    async def _take(self, free: int) -> tuple[int, int]:
        parts = [(p, own) for p, own in self.owned.items() if not own.draining]
        if not parts:
            return 0, -1
        self._rotation = (self._rotation + 1) % len(parts)
        parts = parts[self._rotation:] + parts[:self._rotation]
        base, extra = divmod(free, len(parts))
        calls, plan = [], []
        for i, (p, own) in enumerate(parts):
            share = base + (1 if i < extra else 0)
            if share:
                calls.append(scripts.take(
                    self.q.parts[p], worker=self.consumer, epoch=own.epoch, count=share,
                    max_deliveries=self.q.max_deliveries, on_failure=self.q.on_failure))
                plan.append((p, own))
        took, next_due = 0, -1
        for (p, own), reply in zip(plan, await self._scripts(calls), strict=True):
            if int(reply[0]) == 0:
                self._lost(p, own, "owned by another worker now")
                continue
            for key, item, deliveries in reply[1]:
                if self.owned.get(p) is own:
                    self._dispatch(p, own, text(key), bytes(item), int(deliveries))
                    took += 1
            due = int(reply[2])
            if due >= 0:
                next_due = due if next_due < 0 else min(next_due, due)
        return took, next_due

    async def _idle(self, next_due: int, stopped: asyncio.Future[Any]) -> None:
        """Wait for a publish (the wake stream), new partitions, a due retry, or stop."""
        timeout = IDLE_BLOCK_MS if next_due < 0 else max(1, min(IDLE_BLOCK_MS, next_due))
        read = asyncio.ensure_future(self.client.xread({self.q.wake_key: self._wake_id},
                                                       block=timeout, count=1))
        await _first(read, self._kick.wait(), stopped)
        if not read.done():
            read.add_done_callback(consume)  # a read on the wire finishes within `timeout`
            return
        if read.cancelled() or read.exception() is not None:
            consume(read)
            await self.clock.sleep(0.05)
            return
        for _, entries in read.result() or []:
            if entries:
                self._wake_id = entries[-1][0]

    def _dispatch(self, p: int, own: Owned, key: str, item: bytes, deliveries: int) -> None:
        task = asyncio.get_running_loop().create_task(self._handle(p, own, key, item,
                                                                   deliveries))
        own.tasks[key] = task
        self.running += 1

    # -- running -----------------------------------------------------------------------

    async def _handle(self, p: int, own: Owned, key: str, item: bytes, deliveries: int) -> None:
        msg_id, _, raw = item.partition(b"|")
        try:
            try:
                msg = decode(raw)
            except ValueError as exc:
                msg = Message(msg_id.decode(), self.q.name, None, {"ordering_key": key})
                await self._fail(p, own, key, msg, DeadLetter(f"undecodable: {exc}"), 0.0)
                return
            msg.delivery, msg.entry_id = deliveries, f"{p}:{own.epoch}"  # a fencing token
            try:
                error, duration = await self.invoker.run(msg)
            except asyncio.CancelledError:
                return  # partition lost or shutdown: the head runs again under its owner
            if error is None:
                self.acks.add((p, own, key, msg, duration))
            else:
                await self._fail(p, own, key, msg, error, duration)
        finally:
            if own.tasks.get(key) is asyncio.current_task():
                del own.tasks[key]
            self.running -= 1
            self._capacity.set()
            if own.draining and not own.tasks:
                self._rebalance.set()

    async def _fail(self, p: int, own: Owned, key: str, msg: Message, exc: BaseException,
                    duration: float) -> None:
        """Settle a failed head by the retry decision every queue shares: retry in place,
        snooze, or (attempts spent) hold the key or dead-letter the head."""
        decision = decide(msg, exc, self.q.retry, self.clock)
        info, reason = "", decision.reason
        if decision.action is Action.SNOOZE:
            action, kind = "snooze", EventKind.SNOOZED
        elif decision.action is Action.RETRY:
            action, kind = "retry", EventKind.RETRIED
            msg.attempts += 1
        elif isinstance(exc, DeadLetter):
            action, kind = "dead_letter", EventKind.DEAD_LETTERED
        else:
            msg.attempts += 1
            if self.q.on_failure == "block":
                action, kind, reason = "block", EventKind.RETRIED, "blocked: held for an operator"
            else:
                action, kind = "dead_letter", EventKind.DEAD_LETTERED
        if action in ("retry", "block"):
            info = orjson.dumps({"state": "blocked" if action == "block" else "retrying",
                                 "id": msg.id, "attempts": msg.attempts,
                                 "error": f"{type(exc).__name__}: {exc}"}).decode()
        item = msg.id.encode() + b"|" + encode(msg, check=False)
        [done] = await self._scripts([scripts.fail(
            self.q.parts[p], worker=self.consumer, epoch=own.epoch, key=key, msg_id=msg.id,
            action=action, item=item, delay_ms=int(decision.delay * 1000), blocked_info=info,
            reason=reason or "failed", error=decision.error_json)], settle=True)
        self._kick.set()  # the key is due again (or goes on): the next wait must know it
        if not int(done):
            kind = EventKind.LEASE_LOST
        if self.bus.active:
            self.bus.message_event(kind, msg, duration=duration, delay=decision.delay,
                                   reason=reason or None, error=f"{type(exc).__name__}: {exc}")

    async def _flush_acks(self, batch: list[Ack]) -> None:
        """One round trip: an ack script call per partition of the batch."""
        by_part: dict[tuple[int, int], list[Ack]] = {}
        for ack in batch:
            by_part.setdefault((ack[0], id(ack[1])), []).append(ack)
        groups = list(by_part.values())
        calls = [scripts.ack(self.q.parts[g[0][0]], worker=self.consumer, epoch=g[0][1].epoch,
                             heads=[(key, msg.id) for _, _, key, msg, _ in g]) for g in groups]
        try:
            replies = await self._scripts(calls, settle=True)
        except Exception as exc:  # only when stopping: the heads run again under their owner
            log.error("acks of %s not settled (%s); those heads run again", self.q.name, exc)
            return
        self._kick.set()  # the acked keys' next messages are ready in our partitions
        for group, refused in zip(groups, replies, strict=True):
            refused_at = {int(i) - 1 for i in refused}
            if self.bus.active:
                for i, (_, _, _, msg, duration) in enumerate(group):
                    kind = EventKind.LEASE_LOST if i in refused_at else EventKind.ACKED
                    self.bus.message_event(kind, msg, duration=duration)

    async def _scripts(self, calls: list[ScriptCall],
                       settle: bool = False) -> list[Any]:
        """Run scripts in one round trip. Settles retry through connection trouble (until
        shutdown gives up on them): a lost settle only means the head runs again."""
        backoff = Backoff(self.clock, cap=2.0)
        while True:
            try:
                return await run_pipelined(self.q.app.broker.channel, calls)
            except TRANSIENT as exc:
                if not settle or self.stopping:
                    raise
                await backoff.wait(f"settle on {self.q.name}", exc)

    # -- ownership ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.q.lease / 3
        while not self._leaving.is_set():
            try:
                await self._heartbeat()
            except TRANSIENT as exc:
                log.warning("heartbeat of %s failed (%s)", self.q.name, exc)
            for p, own in list(self.owned.items()):
                # Not renewed for most of a lease: another worker may own it any moment.
                if self.clock.monotonic() - own.renewed > self.q.lease * 0.8:
                    self._lost(p, own, "lease not renewed in time")
            # asyncio.wait, not wait_for: on 3.11 wait_for too can swallow a cancellation.
            waits = [asyncio.ensure_future(e.wait()) for e in (self._rebalance, self._leaving)]
            try:
                await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            self._rebalance.clear()

    async def _heartbeat(self) -> None:
        sent = self.clock.monotonic()
        lease_ms = int(self.q.lease * 1000)
        [reply] = await self._scripts([scripts.members(self.q.members_key, worker=self.consumer,
                                                       ttl_ms=lease_ms)])
        members = [text(m) for m in reply]
        mine = assign(members, self.q.partitions).get(self.consumer, set())
        held = list(self.owned.items())
        wanted = sorted(p for p in mine if p not in self.owned)
        calls = [scripts.claim(self.q.parts[p], worker=self.consumer, epoch=own.epoch,
                               lease_ms=lease_ms) for p, own in held]
        calls += [scripts.claim(self.q.parts[p], worker=self.consumer, epoch="",
                                lease_ms=lease_ms) for p in wanted]
        replies = await self._scripts(calls)
        for (p, own), epoch in zip(held, replies, strict=False):
            if self.owned.get(p) is not own:
                continue
            if str(epoch) == own.epoch:
                own.renewed = sent
            else:
                self._lost(p, own, "owned by another worker now")
        for p, epoch in zip(wanted, replies[len(held):], strict=True):
            if int(epoch):
                self.owned[p] = Owned(str(epoch), sent)
                self._kick.set()
        for p, own in list(self.owned.items()):
            if p not in mine:
                own.draining = True
            if own.draining and not own.tasks:
                await self._release(p, own)

    async def _release(self, p: int, own: Owned) -> None:
        await self.acks.flushed()  # its acks first, or its keys' heads run again
        if self.owned.get(p) is own:
            del self.owned[p]
            await self._scripts([scripts.release(self.q.parts[p], worker=self.consumer,
                                                 epoch=own.epoch)])

    def _lost(self, p: int, own: Owned, why: str) -> None:
        if self.owned.get(p) is own:
            del self.owned[p]
            log.warning("%s partition %d: %s; stopping its %d running handlers", self.q.name,
                        p, why, len(own.tasks))
        for task in own.tasks.values():
            task.cancel()

    async def _shutdown(self) -> None:
        self.stopping = True
        for own in self.owned.values():
            own.draining = True
        tasks = [t for own in self.owned.values() for t in own.tasks.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            for p, own in list(self.owned.items()):
                await self._release(p, own)
            await self._scripts([scripts.members(self.q.members_key, worker=self.consumer,
                                                 ttl_ms=int(self.q.lease * 1000), leave=True)])
        except TRANSIENT as exc:
            log.error("%s: could not hand back partitions (%s); they move on when their "
                      "leases run out", self.q.name, exc)


async def _first(*aws: Any) -> None:
    """Wait until the first of ``aws`` is done; futures passed in are left as they are."""
    tasks = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in aws]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task, given in zip(tasks, aws, strict=True):
        if task is not given:
            task.cancel()
