"""How flow controls plug into the worker: one fetch gate per queue, two middleware per app.

A :class:`Guard` is one flow control (a breaker, a rate limit ...) attached to some queues.
It may hold back fetching (``admit``) and/or wrap handler calls (``around``). The
:class:`FlowGate` of a queue asks its guards in a fixed order and stops at the first that
admits nothing (the app's flow middleware asks it from the ``admit`` hook); the
:class:`FlowWrappers` middleware nests a queue's wrappers in a fixed order, and is added to
the app only with the first wrapper, since an ``around_handler`` costs every handler call.
The order does not depend on the order the controls were declared in, because it matters:

* gates: pause, breaker, concurrency peek, fair feed (moves held messages into the lanes
  only for a fetch that will happen), rate (last: it spends tokens, which must not be
  wasted on a fetch that a later gate would refuse);
* wrappers, outermost first: key pause, breaker, key breaker, key rate, concurrency (innermost, so a
  fleet slot is held only while the handler really runs, not while another guard snoozes).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..core.clock import Clock
from ..core.message import Message
from ..core.middleware import Middleware
from ..engine.connection import TRANSIENT

if TYPE_CHECKING:
    from ..queues.queue import Queue

log = logging.getLogger("tidings.flow")

Call = Callable[[], Awaitable[Any]]
KeyFn = Callable[[Message], Any]

# Gate order (ascending).
GATE_PAUSE, GATE_BREAKER, GATE_CONCURRENCY, GATE_FAIR, GATE_RATE = 10, 20, 30, 35, 40
# Wrapper order (ascending = outermost first).
WRAP_PAUSE, WRAP_BREAKER, WRAP_RATE, WRAP_CONCURRENCY = 10, 20, 30, 40
WRAP_KEY_BREAKER = 25  # a key's breaker: inside the queue's, before a key's rate token

# Longest a gate sleeps before handing control back to the fetch loop: the loop only
# notices a worker shutdown between gate calls.
MAX_GATE_SLEEP = 0.25


class _Unbound:
    """Stands in for the Redis client until first use (the app connects after declaring)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("flow control used before the app connected")


UNBOUND: Any = _Unbound()


class Guard:
    """Base of a flow control: override ``admit`` and/or ``around`` and set their stages."""

    gate_stage: int | None = None  # position in the gate chain; None: not a gate
    wrap_stage: int | None = None  # position in the handler chain; None: no wrapper

    async def admit(self, queue: Queue, free: int) -> int:
        """How many of ``free`` messages ``queue`` may fetch now (may wait, briefly)."""
        return free

    async def around(self, message: Message | list[Message], call_next: Call) -> Any:
        """Wrap one handler call (a message, or a batch)."""
        return await call_next()


class GuardedQueues(Protocol):
    def install(self, guard: Guard, queues: Sequence[Queue | str]) -> list[str]: ...


def queue_name(message: Message | list[Message]) -> str:
    return message[0].queue if isinstance(message, list) else message.queue


def sleep_for(clock: Clock, seconds: float) -> Awaitable[None]:
    """Sleep at most :data:`MAX_GATE_SLEEP`, so gates stay responsive to shutdown."""
    return clock.sleep(max(0.0, min(seconds, MAX_GATE_SLEEP)))


class FlowGate:
    """The one fetch gate of a queue; asks its guards in stage order."""

    def __init__(self) -> None:
        self.guards: list[Guard] = []
        self._failures = 0

    def add(self, guard: Guard) -> None:
        if guard not in self.guards:
            self.guards.append(guard)
            self.guards.sort(key=lambda g: g.gate_stage or 0)

    async def admit(self, queue: Queue, free: int) -> int:
        try:
            for guard in self.guards:
                if free <= 0:
                    break
                free = min(free, await guard.admit(queue, free))
        except TRANSIENT as exc:
            # An exception here would end the worker's fetch loop: admit nothing, retry soon.
            # Failing closed is right: the fetch itself needs the same server.
            self._failures += 1
            log.warning("flow gate of %s: %s: %s", queue.name, type(exc).__name__, exc)
            await sleep_for(queue.app.clock, 0.05 * 2 ** min(self._failures, 3))
            return 0
        except Exception:
            self._failures += 1
            log.exception("flow gate of %s failed; admitting nothing for now", queue.name)
            await sleep_for(queue.app.clock, 1.0)
            return 0
        self._failures = 0
        return free


class FlowWrappers(Middleware):
    """Nests the wrappers of the message's queue around its handler call."""

    def __init__(self) -> None:
        self.chains: dict[str, list[Guard]] = {}

    def add(self, queue: str, guard: Guard) -> None:
        chain = self.chains.setdefault(queue, [])
        if guard not in chain:
            chain.append(guard)
            chain.sort(key=lambda g: g.wrap_stage or 0)

    async def around_handler(self, message: Message | list[Message], call_next: Call) -> Any:
        guards = self.chains.get(queue_name(message))
        if not guards:
            return await call_next()
        chain = call_next
        for guard in reversed(guards):
            chain = _wrap(guard, message, chain)
        return await chain()


def _wrap(guard: Guard, message: Message | list[Message], call_next: Call) -> Call:
    async def wrapped() -> Any:
        return await guard.around(message, call_next)

    return wrapped


def key_of(key: KeyFn, message: Message) -> str | None:
    """The flow key of a message as text; None (the function returned None): no key."""
    value = key(message)
    return None if value is None else str(value)
