"""``app.flow``: declaring flow control on an app's queues, and looking at it.

::

    app = Tidings()
    email, sms = app.queue("email"), app.queue("sms")

    app.flow.breaker("smtp", failure_threshold=5, open_for=30).protect(email)
    app.flow.rate_limit("sms-provider", "50/s").protect(sms)
    app.flow.key_rate_limit("per-recipient", "1/min", key=lambda m: m.payload["to"]) \\
        .protect(sms)
    app.flow.concurrency("smtp", limit=20).protect(email)
    app.flow.pausable(email, key=lambda m: m.payload["tenant"])

    async with app:
        await app.flow.pause("email")                 # every worker stops fetching it
        await app.flow.resume("email")

Every control is enforced by each worker of the app and shared through Redis, so the fleet
as a whole respects it. Declare the same controls in every process (they live in the app
module the workers import).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ..core.errors import ValidationError
from ..core.middleware import Middleware, WorkerView
from ..core.stored import text
from ..queues.queue import Queue
from ._guard import FlowGate, FlowWrappers, Guard, KeyFn
from .breaker import BreakerState, CircuitBreaker
from .breaker_guard import BreakerGuard
from .fair import FairQueue
from .key_breaker import KeyBreaker
from .limits import FleetConcurrency, KeyRateLimit, QueueRateLimit
from .pause import KeyPauseGuard, PauseGuard, PauseState, pause_queue, pause_state, resume_queue
from .ratelimit import RateSetting

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost

log = logging.getLogger("tidings.flow")
G = TypeVar("G", bound=Guard)


class FlowGates(Middleware):
    """Asks each queue's :class:`FlowGate` before every fetch of that queue."""

    def __init__(self, flow: FlowControl) -> None:
        self.flow = flow

    async def admit(self, queue: str, free: int) -> int:
        declared = self.flow.app.queues.get(queue)
        if declared is None:
            return free
        return await self.flow.gate(declared).admit(declared, free)

    async def on_worker_start(self, worker: WorkerView) -> None:
        """Register the app's breakers, so the CLI can show them with their settings."""
        flow = self.flow
        if not flow.breakers:
            return
        try:
            await flow.app.broker.client.hset(
                flow.app.key_space.breaker_registry,
                mapping={b.name: orjson.dumps(b.describe()) for b in flow.breakers})
        except Exception:
            log.exception("could not register circuit breakers for the CLI")


class FlowControl:
    """The flow controls of one app (``app.flow``); see the module docstring.

    The app makes it when it is made, so every worker obeys a queue pause whether or not
    the app's code ever touched ``app.flow``.
    """

    def __init__(self, app: ExtensionHost) -> None:
        self.app = app
        self.guards: list[Guard] = []
        self.wrappers = FlowWrappers()
        self.pause_guard = PauseGuard(self)
        self._gates: dict[str, FlowGate] = {}  # queue name -> its gate
        self._wrappers_added = False  # added with the first wrapper: it costs every call
        app.add_middleware(FlowGates(self))

    # -- declaring ---------------------------------------------------------------------

    def breaker(self, name: str, *, is_failure: Callable[[BaseException], bool] | None = None,
                **options: Any) -> BreakerGuard:
        """A circuit breaker named after what it protects (a handler, a downstream).

        ``options`` are those of :class:`~tidings.flow.CircuitBreaker`
        (``failure_threshold``, ``failure_rate``, ``window``, ``open_for``, ``clock`` ...).
        Call ``.protect(queue, ...)`` on the result. The same name returns the same breaker.
        """
        existing = self._named(BreakerGuard, name)
        if existing is not None:
            return existing
        return self._add(BreakerGuard(self, name, is_failure=is_failure, **options))

    def key_breaker(self, name: str, *, key: KeyFn,
                    is_failure: Callable[[BaseException], bool] | None = None,
                    **options: Any) -> KeyBreaker:
        """A circuit breaker per ``key(message)`` (a subscriber's endpoint), named
        ``"name:key"``; options as for :meth:`breaker`. The same name returns the same one."""
        existing = self._named(KeyBreaker, name)
        if existing is not None:
            return existing
        return self._add(KeyBreaker(self, name, key=key, is_failure=is_failure, **options))

    def rate_limit(self, name: str, rate: float | str, *, burst: int | None = None
                   ) -> QueueRateLimit:
        """A fleet-wide rate (``"100/s"``, ``"5000/h"`` or per second) shared by its queues."""
        return self._add(QueueRateLimit(self, name, rate, burst))

    def key_rate_limit(self, name: str, rate: float | str, *, key: KeyFn,
                       burst: int | None = 1) -> KeyRateLimit:
        """A fleet-wide rate per ``key(message)`` (a recipient, a tenant)."""
        return self._add(KeyRateLimit(self, name, rate, key=key, burst=burst))

    def concurrency(self, name: str, limit: int, *, lease: float = 30.0, wait: float = 2.0,
                    snooze: float = 0.5) -> FleetConcurrency:
        """At most ``limit`` handler calls at once, fleet-wide, over its queues."""
        return self._add(FleetConcurrency(self, name, limit, lease=lease, wait=wait,
                                          snooze=snooze))

    def fair(self, queue: Queue | str, *, quantum: int = 1) -> FairQueue:
        """Publish through the result to share ``queue`` fairly between tenants."""
        q = self.app.get_queue(queue)
        for guard in self.guards:
            if isinstance(guard, FairQueue) and guard.queue is q:
                return guard
        guard = self._add(FairQueue(self, q, quantum=quantum))
        self.install(guard, [q])
        return guard

    def pausable(self, queue: Queue | str, *, key: KeyFn, **options: Any) -> KeyPauseGuard:
        """Let single keys of ``queue`` be paused; ``key(message)`` names a message's key."""
        q = self.app.get_queue(queue)
        guard = KeyPauseGuard(self, q, key, **options)
        self._add(guard)
        self.install(guard, [q])
        return guard

    # -- pausing -----------------------------------------------------------------------

    async def pause(self, queue: Queue | str, key: str | None = None) -> None:
        """Pause ``queue`` (or one ``key`` of it) on every worker within about a second."""
        await self._connected()
        await pause_queue(self.app.get_queue(queue), key)

    async def resume(self, queue: Queue | str, key: str | None = None) -> int:
        """Resume; for a key, returns how many parked messages were made due at once."""
        await self._connected()
        return await resume_queue(self.app.get_queue(queue), key)

    async def pause_state(self, queue: Queue | str) -> PauseState:
        await self._connected()
        return await pause_state(self.app.get_queue(queue))

    # -- rates at run time ---------------------------------------------------------------

    async def set_rate(self, name: str, rate: float | str, burst: int | None = None
                       ) -> RateSetting:
        """Change rate limit ``name`` on every worker, from its next acquire, no restart.

        ``rate`` as for :meth:`rate_limit`; a ``None`` burst is one second's worth of the
        new rate. The override is kept in Redis until :meth:`reset_rate`.
        """
        limit = self._rate_limit(name)
        await self._connected()
        limit.limiter.client = self.app.broker.client
        override = await limit.limiter.set_override(name, rate, burst)
        return RateSetting(name, limit.limiter.rate, limit.limiter.burst, override)

    async def reset_rate(self, name: str) -> RateSetting:
        """Back to the rate and burst the code declares, from the next acquire."""
        limit = self._rate_limit(name)
        await self._connected()
        limit.limiter.client = self.app.broker.client
        await limit.limiter.clear_override(name)
        return RateSetting(name, limit.limiter.rate, limit.limiter.burst)

    async def rate_setting(self, name: str) -> RateSetting:
        """Rate limit ``name``'s rate and burst in code and any run-time override."""
        limit = self._rate_limit(name)
        await self._connected()
        limit.limiter.client = self.app.broker.client
        return RateSetting(name, limit.limiter.rate, limit.limiter.burst,
                           await limit.limiter.override(name))

    @property
    def rate_limits(self) -> list[QueueRateLimit]:
        """The queue rate limits declared on this app (those :meth:`set_rate` changes)."""
        return [g for g in self.guards if isinstance(g, QueueRateLimit)]

    def _rate_limit(self, name: str) -> QueueRateLimit:
        limit = self._named(QueueRateLimit, name)
        if limit is None:
            known = ", ".join(g.name for g in self.rate_limits)
            raise ValidationError("name", f"no queue rate limit {name!r} is declared "
                                  f"(declared: {known or 'none'})")
        return limit

    # -- looking -----------------------------------------------------------------------

    @property
    def breakers(self) -> list[BreakerGuard]:
        return [g for g in self.guards if isinstance(g, BreakerGuard)]

    async def breaker_states(self) -> dict[str, tuple[BreakerState, dict[str, Any]]]:
        """Every breaker known to this app or registered by a worker: state and config."""
        await self._connected()
        client = self.app.broker.client
        prefix = self.app.settings.key_prefix
        configs = {text(k): orjson.loads(v) for k, v in
                   (await client.hgetall(self.app.key_space.breaker_registry)).items()}
        configs.update({b.name: b.describe() for b in self.breakers if b.queues})
        defaults = CircuitBreaker(client, prefix=prefix)
        names = set(configs) | set(await defaults.list_states())
        out: dict[str, tuple[BreakerState, dict[str, Any]]] = {}
        for name in sorted(names):
            guard = self._named(BreakerGuard, name)
            if guard is not None:
                state = await guard.status()
            else:
                options = {k: configs.get(name, {}).get(k) for k in ("window", "open_for",
                                                                      "buckets")}
                cb = CircuitBreaker(client, prefix=prefix, **{
                    k: v for k, v in options.items() if v is not None})
                state = await cb.state(name)
            out[name] = (state, configs.get(name, {}))
        return out

    # -- wiring ------------------------------------------------------------------------

    def install(self, guard: Guard, queues: Sequence[Queue | str]) -> list[str]:
        """Attach ``guard`` to ``queues``: its gate and its handler wrapper."""
        if not queues:
            raise ValidationError("queues", "protect at least one queue")
        names = []
        for item in queues:
            queue = self.app.get_queue(item)
            if guard.gate_stage is not None:
                self.gate(queue).add(guard)
            if guard.wrap_stage is not None:
                self.wrappers.add(queue.name, guard)
                if not self._wrappers_added:
                    self.app.add_middleware(self.wrappers)
                    self._wrappers_added = True
            names.append(queue.name)
        return names

    def gate(self, queue: Queue) -> FlowGate:
        """The fetch gate of ``queue`` (every gate holds the queue pause)."""
        gate = self._gates.get(queue.name)
        if gate is None:
            gate = self._gates[queue.name] = FlowGate()
            gate.add(self.pause_guard)
        return gate

    def _add(self, guard: G) -> G:
        self.guards.append(guard)
        return guard

    def _named(self, kind: type[G], name: str) -> G | None:
        for guard in self.guards:
            if isinstance(guard, kind) and getattr(guard, "name", None) == name:
                return guard
        return None

    async def _connected(self) -> None:
        if not self.app.broker.connected:
            await self.app.connect()
