"""Rate and concurrency limits wired into the worker, enforced across the fleet through Redis.

Declared on ``app.flow``::

    app.flow.rate_limit("smtp", "200/s").protect(email)           # fetch only granted tokens
    app.flow.key_rate_limit("per-recipient", "1/min",
                            key=lambda m: m.payload["to"]).protect(sms)
    app.flow.concurrency("smtp", limit=20).protect(email, digest)  # fleet-wide cap

Over-limit messages are never failed and never spend an attempt: a queue limit keeps them
in the queue (the worker fetches only as many as it got tokens for), a key limit puts the
message back (``Snooze``) until its key has a token again, and a concurrency cap makes the
handler call wait for a slot (and puts the message back if none frees up in ``wait``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, Any, Self

from redis.exceptions import ResponseError

from ..core.clock import Clock
from ..core.errors import Snooze, ValidationError
from ..core.events import EventKind
from ..core.keys import GROUP
from ..core.message import Message
from ..engine.connection import TRANSIENT
from ..engine.scripts import LIBRARY
from ._guard import (
    GATE_CONCURRENCY,
    GATE_RATE,
    MAX_GATE_SLEEP,
    UNBOUND,
    WRAP_CONCURRENCY,
    WRAP_RATE,
    Call,
    Guard,
    KeyFn,
    key_of,
    sleep_for,
)
from .concurrency import ConcurrencyLimit
from .ratelimit import RateLimit

if TYPE_CHECKING:
    from ..queues.queue import Queue
    from .control import FlowControl

log = logging.getLogger("tidings.flow")
_PEEK = LIBRARY["concurrency_peek"]


class _Protecting(Guard):
    def __init__(self, flow: FlowControl, name: str) -> None:
        self.flow = flow
        self.name = name
        self.queues: list[str] = []

    def protect(self, *queues: Queue | str) -> Self:
        """Apply this limit to these queues (objects or names); returns the limit."""
        self.queues += [q for q in self.flow.install(self, queues) if q not in self.queues]
        return self

    @property
    def client(self) -> Any:
        return self.flow.app.broker.client

    @property
    def clock(self) -> Clock:
        return self.flow.app.clock

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {', '.join(self.queues) or 'nothing'}>"


class QueueRateLimit(_Protecting):
    """A token bucket shared by its queues and all workers; the fetch takes only tokens held.

    Before fetching, the gate counts the queue's ready backlog (undelivered entries, due
    delayed messages, and entries held by consumers that stopped heartbeating, which the
    workers reclaim through the same gate) and asks for at most that many tokens, so an
    idle queue does not burn tokens on empty fetches.
    """

    gate_stage = GATE_RATE

    def __init__(self, flow: FlowControl, name: str, rate: float | str,
                 burst: int | None = None) -> None:
        super().__init__(flow, name)
        self.limiter = RateLimit(UNBOUND, rate, burst, prefix=flow.app.settings.key_prefix)
        self.limiter.key(name)

    async def admit(self, queue: Queue, free: int) -> int:
        backlog = await _backlog(self.client, queue)
        if backlog <= 0:
            await _wait_for_entries(self.client, queue)
            return 0
        self.limiter.client = self.client
        # Wait for the next token here rather than return 0: the fetch loop pauses 50 ms
        # before asking a gate again, and at high rates a bucket full for that long would
        # overflow and lose tokens.
        deadline = self.clock.monotonic() + MAX_GATE_SLEEP
        while True:
            granted, wait = await self.limiter.acquire(self.name, min(free, backlog))
            if granted > 0:
                return granted
            # Reported, so metrics can show how long the limit holds the queue back.
            self.flow.app.middleware.event(EventKind.RATE_LIMITED, queue.name, "",
                                           delay=wait, reason=self.name)
            if self.clock.monotonic() + wait > deadline:
                await sleep_for(self.clock, wait)
                return 0
            await self.clock.sleep(wait)


async def _backlog(client: Any, queue: Queue) -> int:
    """Messages a fetch or a reclaim could take now.

    Undelivered lane entries, due delayed messages, and entries held by consumers whose
    last heartbeat is older than the visibility timeout (a reclaim takes those).
    """
    k = queue.keys
    now_ms = int(queue.app.clock.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for lane in k.lanes:
        pipe.xlen(lane)
        pipe.xpending(lane, GROUP)
    pipe.zcount(k.delayed, "-inf", now_ms)
    pipe.zrangebyscore(k.consumers, now_ms - int(queue.config.visibility_timeout * 1000), "+inf")
    try:
        res = await pipe.execute()
    except ResponseError as exc:
        if "NOGROUP" in str(exc):
            return 1  # let the fetch run: it recreates the group
        raise
    summaries = [res[i] or {} for i in (1, 3, 5)]
    ready = sum(int(res[i]) - int(summary.get("pending", 0))
                for i, summary in zip((0, 2, 4), summaries, strict=True))
    live = set(res[7])
    stale = sum(int(c["pending"]) for summary in summaries
                for c in summary.get("consumers") or () if c["name"] not in live)
    return ready + int(res[6]) + stale


async def _wait_for_entries(client: Any, queue: Queue) -> None:
    """Block briefly until something is published to (or woken in) the queue."""
    k = queue.keys
    streams = {k.high: "$", k.normal: "$", k.low: "$", k.wake: "$"}
    await client.xread(streams, block=int(MAX_GATE_SLEEP * 1000), count=1)


class KeyRateLimit(_Protecting):
    """A token bucket per key (``key(message)``, e.g. the recipient), shared fleet-wide.

    A message whose key has no token left is put back for as long as the next token takes
    (plus up to ``jitter`` of that, so a key's waiting messages do not all wake at once).
    A key function returning None exempts the message. Batch handlers are not limited by
    key: a batch cannot be split around its handler call.
    """

    wrap_stage = WRAP_RATE

    def __init__(self, flow: FlowControl, name: str, rate: float | str, *, key: KeyFn,
                 burst: int | None = 1, jitter: float = 0.1) -> None:
        super().__init__(flow, name)
        self.limiter = RateLimit(UNBOUND, rate, burst, prefix=flow.app.settings.key_prefix)
        self.limiter.key(name)
        self.key = key
        self.jitter = jitter

    async def around(self, message: Message | list[Message], call_next: Call) -> Any:
        if isinstance(message, list):
            return await call_next()
        key = key_of(self.key, message)
        if key is None:
            return await call_next()
        self.limiter.client = self.client
        try:
            granted, wait = await self.limiter.acquire(f"{self.name}:{key}")
        except TRANSIENT as exc:
            log.warning("key rate limit %s unavailable (%s); message put back", self.name, exc)
            raise Snooze(1.0) from exc
        if not granted:
            raise Snooze(wait * (1 + random.random() * self.jitter))
        return await call_next()


class FleetConcurrency(_Protecting):
    """At most ``limit`` handler calls at once across all workers, for all its queues.

    A call first takes a slot (a lease of ``lease`` seconds in Redis, renewed every third
    of it while the handler runs, released when it returns). With no slot free it polls
    with backoff for up to ``wait`` seconds, then puts the message back for ``snooze``
    seconds: waiting briefly keeps latency low when slots turn over quickly, and giving up
    keeps a long outage of slots from pinning messages inside workers. A worker that dies
    holding slots frees them when their leases run out. The gate fetches no more messages
    than there are free slots, so few of them ever wait.
    """

    gate_stage = GATE_CONCURRENCY
    wrap_stage = WRAP_CONCURRENCY

    def __init__(self, flow: FlowControl, name: str, limit: int, *, lease: float = 30.0,
                 wait: float = 2.0, snooze: float = 0.5) -> None:
        super().__init__(flow, name)
        if wait < 0 or snooze < 0:
            raise ValidationError("wait", "wait and snooze must not be negative")
        self.cap = ConcurrencyLimit(UNBOUND, limit, lease, prefix=flow.app.settings.key_prefix)
        self.cap.key(name)
        self.wait = wait
        self.snooze = snooze
        self.lost = 0  # leases that ran out while their handler still ran

    @property
    def limit(self) -> int:
        return self.cap.limit

    async def held(self) -> int:
        """Slots held right now, fleet-wide."""
        return int(await _PEEK(self.client, [self.cap.key(self.name)], []))

    async def admit(self, queue: Queue, free: int) -> int:
        room = self.cap.limit - await self.held()
        if room <= 0:
            await sleep_for(queue.app.clock, 0.02)
            return 0
        return min(free, room)

    async def around(self, message: Message | list[Message], call_next: Call) -> Any:
        token = await self._acquire()
        if token is None:
            raise Snooze(self.snooze)
        renewer = asyncio.get_running_loop().create_task(self._renew(token))
        try:
            return await call_next()
        finally:
            renewer.cancel()
            try:
                await self.cap.release(self.name, [token])
            except TRANSIENT as exc:
                log.warning("concurrency %s: slot not released (%s); its lease frees it",
                            self.name, exc)

    async def _acquire(self) -> str | None:
        self.cap.client = self.client
        deadline = self.clock.monotonic() + self.wait
        pause = 0.005
        while True:
            try:
                tokens = await self.cap.acquire(self.name)
            except TRANSIENT as exc:
                log.warning("concurrency %s unavailable (%s)", self.name, exc)
                tokens = []
            if tokens:
                return tokens[0]
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return None
            # Jittered exponential backoff: waiters on one cap do not poll in lockstep.
            await self.clock.sleep(min(left, pause * (0.5 + random.random())))
            pause = min(0.2, pause * 2)

    async def _renew(self, token: str) -> None:
        every = self.cap.lease / 3
        while True:
            await self.clock.sleep(every)
            try:
                lost = await self.cap.renew(self.name, [token])
            except TRANSIENT as exc:
                log.warning("concurrency %s: lease not renewed (%s)", self.name, exc)
                continue
            if lost:
                self.lost += 1
                log.warning("concurrency %s: a slot's lease ran out while its handler ran; "
                            "the cap may be exceeded until it returns", self.name)
                return
