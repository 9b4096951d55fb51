"""A circuit breaker wired into the worker: it stops fetching while open, probes when half open.

One breaker protects any number of queues that share a downstream::

    smtp = app.flow.breaker("smtp", failure_threshold=5, open_for=30).protect(email, digest)

* **Fetch gate.** While the breaker is open no worker takes messages from those queues:
  they stay queued with their attempts untouched. Half open, one message at a time is let
  through as a probe; its success closes the breaker, its failure reopens it.
* **Handler wrapper.** Records every outcome. What counts: a handler that returns is a
  success; any exception (``Retry`` included: the downstream did not do the work) is a
  failure unless ``is_failure(exc)`` says otherwise, in which case it is a success;
  ``Snooze`` and ``DeadLetter`` are verdicts on the message, not on the downstream, so
  they count as nothing. A message fetched before this worker saw the breaker open is put
  back (``Snooze(0)``, no attempt spent) instead of calling a downstream known to be down.
* **Events.** Every state change is emitted once, by the worker whose call made it, as
  ``BREAKER_OPENED`` / ``BREAKER_HALF_OPEN`` / ``BREAKER_CLOSED`` with
  ``reason="breaker smtp: closed -> open"``.

The state lives in Redis (:class:`~tidings.flow.CircuitBreaker`), so all workers share it.
A closed breaker is re-read at most every ``check_every`` seconds per worker, so a breaker
opened by one worker stops the others within that time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..core.errors import DeadLetter, Snooze
from ..core.events import EventKind
from ..core.message import Message
from ..engine.connection import TRANSIENT
from ._guard import GATE_BREAKER, UNBOUND, WRAP_BREAKER, Call, Guard, queue_name, sleep_for
from .breaker import BreakerState, CircuitBreaker, CircuitState, Transition

if TYPE_CHECKING:
    from ..queues.queue import Queue
    from .control import FlowControl

log = logging.getLogger("tidings.flow")

# The event each breaker transition emits (the shared and the per-key breakers).
EVENT_OF_STATE = {
    CircuitState.OPEN: EventKind.BREAKER_OPENED,
    CircuitState.HALF_OPEN: EventKind.BREAKER_HALF_OPEN,
    CircuitState.CLOSED: EventKind.BREAKER_CLOSED,
}
# A probe grant not claimed by a handler this long after it was granted went to a fetch
# that came back empty: the next fetch reuses the slot instead of asking for another.
_PROBE_CLAIM_WAIT = 0.05


class BreakerGuard(Guard):
    """A named circuit breaker protecting queues; create it with ``app.flow.breaker``."""

    gate_stage = GATE_BREAKER
    wrap_stage = WRAP_BREAKER

    def __init__(
        self,
        flow: FlowControl,
        name: str,
        *,
        is_failure: Callable[[BaseException], bool] | None = None,
        check_every: float = 0.25,
        **options: Any,
    ) -> None:
        self.flow = flow
        self.name = name
        self.is_failure = is_failure or (lambda exc: True)
        self.check_every = check_every
        options.setdefault("clock", flow.app.clock.time)
        self.breaker = CircuitBreaker(UNBOUND, prefix=flow.app.settings.key_prefix, **options)
        self.breaker.key(name)  # validates the name now rather than at the first fetch
        self.queues: list[str] = []
        self.state = CircuitState.CLOSED  # this worker's view, refreshed by every call
        self._checked_at = -math.inf
        self._probes: dict[str, float] = {}  # queue -> when a still unclaimed probe was granted

    def protect(self, *queues: Queue | str) -> BreakerGuard:
        """Guard these queues (objects or names) with this breaker; returns the breaker."""
        self.queues += [q for q in self.flow.install(self, queues) if q not in self.queues]
        return self

    def _cb(self) -> CircuitBreaker:
        # Bound at each use: the app connects after declaring its flow, and may reconnect.
        self.breaker.client = self.flow.app.broker.client
        return self.breaker

    # -- the fetch gate ----------------------------------------------------------------

    async def admit(self, queue: Queue, free: int) -> int:
        granted = self._probes.get(queue.name)
        if granted is not None:
            waited = self.flow.app.clock.monotonic() - granted
            if waited < _PROBE_CLAIM_WAIT:
                # Let the fetched probe start.
                await sleep_for(queue.app.clock, _PROBE_CLAIM_WAIT - waited)
                return 0
            if waited < self.breaker.probe_timeout / 2:
                return 1  # our probe slot is still unused: try it on this fetch
            del self._probes[queue.name]  # the slot has (nearly) timed out: ask again
        now = self.flow.app.clock.monotonic()
        if self.state is CircuitState.CLOSED and now - self._checked_at < self.check_every:
            return free
        decision = await self._cb().allow(self.name)
        self._checked_at = now
        self._observe(decision.state, decision.transition, queue.name)
        if not decision.allowed:
            await sleep_for(queue.app.clock, decision.retry_after)
            return 0
        if decision.state is CircuitState.HALF_OPEN:
            self._probes[queue.name] = self.flow.app.clock.monotonic()
            return 1
        return free

    # -- the handler wrapper -----------------------------------------------------------

    async def around(self, message: Message | list[Message], call_next: Call) -> Any:
        queue = queue_name(message)
        granted = self._probes.pop(queue, None)  # the first handler after a grant is the probe
        if self.state is CircuitState.OPEN and granted is None:
            # Fetched before this worker learnt the breaker opened: back to the queue,
            # no attempt spent; the gate holds it there until the breaker lets it through.
            raise Snooze(0)
        try:
            result = await call_next()
        except Exception as exc:
            verdict = self._verdict(exc)
            if verdict is None:
                self._unused_probe(queue, granted)
            else:
                await self._record(verdict, queue, message)
            raise
        verdicts = [self._verdict(m.outcome) for m in message if m.outcome is not None] if (
            isinstance(message, list)) else []
        if isinstance(message, list) and len(verdicts) == len(message) and all(
                v is None for v in verdicts):
            self._unused_probe(queue, granted)  # every message snoozed or dead-lettered
            return result
        await self._record(False not in verdicts, queue, message)
        return result

    def _verdict(self, exc: BaseException) -> bool | None:
        """True: the downstream call succeeded; False: it failed; None: says nothing."""
        if isinstance(exc, Snooze | DeadLetter):
            return None
        return not self.is_failure(exc)

    def _unused_probe(self, queue: str, granted: float | None) -> None:
        if granted is not None:  # the probe never reached the downstream: reuse its slot
            self._probes[queue] = min(granted, self.flow.app.clock.monotonic() - _PROBE_CLAIM_WAIT)

    async def _record(self, ok: bool, queue: str, message: Message | list[Message]) -> None:
        try:
            transition = await self._cb().record(self.name, ok)
        except TRANSIENT as exc:
            # Bookkeeping must never change what happens to the message itself.
            log.warning("breaker %s: outcome not recorded (%s)", self.name, exc)
            return
        if transition is not None:
            first = message[0] if isinstance(message, list) else message
            self._observe(transition.to_state, transition, queue, first.id)

    # -- state -------------------------------------------------------------------------

    def _observe(self, state: CircuitState, transition: Transition | None, queue: str,
                 message_id: str = "") -> None:
        self.state = state
        if state is not CircuitState.CLOSED:
            self._checked_at = -math.inf
        if transition is None:
            return
        reason = f"breaker {self.name}: {transition.from_state} -> {transition.to_state}"
        log.warning("%s (queue %s)", reason, queue)
        self.flow.app.middleware.event(EVENT_OF_STATE[transition.to_state], queue, message_id,
                                       reason=reason)

    async def status(self) -> BreakerState:
        """The shared state, as stored in Redis."""
        return await self._cb().state(self.name)

    async def reset(self) -> None:
        """Force the breaker closed (an operator's override)."""
        transition = await self._cb().reset(self.name)
        self._observe(CircuitState.CLOSED, transition, self.queues[0] if self.queues else "")

    def describe(self) -> dict[str, Any]:
        """The configuration, as the CLI shows it."""
        b = self.breaker
        return {"queues": self.queues, "failure_threshold": b.failure_threshold,
                "failure_rate": b.failure_rate, "min_calls": b.min_calls, "window": b.window,
                "open_for": b.open_for, "half_open_probes": b.half_open_probes,
                "buckets": b.buckets}

    def __repr__(self) -> str:
        return f"<BreakerGuard {self.name} on {', '.join(self.queues) or 'nothing'}>"


def breakers_of(guards: Sequence[Guard]) -> list[BreakerGuard]:
    return [g for g in guards if isinstance(g, BreakerGuard)]
