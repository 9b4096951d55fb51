"""A circuit breaker per key: one downstream per message (a subscriber's webhook endpoint, a
tenant's SMTP relay), each tripping on its own failures.

::

    app.flow.key_breaker("webhook", key=lambda m: m.headers.get("subscriber"),
                         failure_threshold=5, open_for=60).protect(webhooks)

Each key ``k`` has the breaker named ``"webhook:k"`` (:class:`~tidings.flow.CircuitBreaker`,
shared fleet-wide in Redis, listed and reset by ``tidings breakers``). Unlike the queue
breaker it cannot stop the fetch (one queue carries many keys): a message whose key's
breaker is open is put back (``Snooze`` until the next probe, plus up to ``jitter`` of it;
no attempt spent), so one dead endpoint does not hold back the others. Outcomes count as
for :class:`~tidings.flow.BreakerGuard`: a return is a success, an exception a failure
unless ``is_failure(exc)`` says no; ``Snooze`` and ``DeadLetter`` count as nothing. A key
function returning None exempts the message; batch handlers are not guarded by key.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.errors import DeadLetter, Snooze
from ..core.message import Message
from ..engine.connection import TRANSIENT
from ._guard import UNBOUND, WRAP_KEY_BREAKER, Call, Guard, KeyFn, key_of
from .breaker import CircuitBreaker, Transition
from .breaker_guard import EVENT_OF_STATE

if TYPE_CHECKING:
    from ..queues.queue import Queue
    from .control import FlowControl

log = logging.getLogger("tidings.flow")


class KeyBreaker(Guard):
    """Breakers by ``key(message)``; create with ``app.flow.key_breaker``."""

    wrap_stage = WRAP_KEY_BREAKER

    def __init__(self, flow: FlowControl, name: str, *, key: KeyFn,
                 is_failure: Callable[[BaseException], bool] | None = None,
                 jitter: float = 0.1, **options: Any) -> None:
        self.flow = flow
        self.name = name
        self.key = key
        self.is_failure = is_failure or (lambda exc: True)
        self.jitter = jitter
        options.setdefault("clock", flow.app.clock.time)
        self.breaker = CircuitBreaker(UNBOUND, prefix=flow.app.settings.key_prefix, **options)
        self.breaker.key(name)
        self.queues: list[str] = []

    def protect(self, *queues: Queue | str) -> KeyBreaker:
        """Guard these queues' handlers; returns the breaker."""
        self.queues += [q for q in self.flow.install(self, queues) if q not in self.queues]
        return self

    def name_of(self, key: str) -> str:
        """The breaker name of one key (what ``tidings breakers`` lists and resets)."""
        return f"{self.name}:{key}"

    def _cb(self) -> CircuitBreaker:
        self.breaker.client = self.flow.app.broker.client
        return self.breaker

    async def around(self, message: Message | list[Message], call_next: Call) -> Any:
        key = None if isinstance(message, list) else key_of(self.key, message)
        if key is None or isinstance(message, list):
            return await call_next()
        name = self.name_of(key)
        try:
            decision = await self._cb().allow(name)
        except TRANSIENT as exc:
            log.warning("key breaker %s unavailable (%s); message put back", name, exc)
            raise Snooze(1.0) from exc
        self._report(decision.transition, name, message)
        if not decision.allowed:
            raise Snooze(decision.retry_after * (1 + random.random() * self.jitter))
        try:
            result = await call_next()
        except (Snooze, DeadLetter):
            raise
        except Exception as exc:
            await self._record(name, not self.is_failure(exc), message)
            raise
        await self._record(name, True, message)
        return result

    async def _record(self, name: str, ok: bool, message: Message) -> None:
        try:
            transition = await self._cb().record(name, ok)
        except TRANSIENT as exc:
            log.warning("key breaker %s: outcome not recorded (%s)", name, exc)
            return
        self._report(transition, name, message)

    def _report(self, transition: Transition | None, name: str, message: Message) -> None:
        if transition is None:
            return
        reason = f"breaker {name}: {transition.from_state} -> {transition.to_state}"
        log.warning("%s (queue %s)", reason, message.queue)
        self.flow.app.middleware.event(EVENT_OF_STATE[transition.to_state], message.queue,
                                       message.id, reason=reason)

    async def reset(self, key: str) -> None:
        """Force one key's breaker closed (an operator's override)."""
        await self._cb().reset(self.name_of(key))

    def __repr__(self) -> str:
        return f"<KeyBreaker {self.name} on {', '.join(self.queues) or 'nothing'}>"
