"""Fleet-wide flow control on Redis: rate limits, concurrency caps, circuit breakers, pauses.

The primitives (:class:`RateLimit`, :class:`ConcurrencyLimit`, :class:`CircuitBreaker`) work
on their own; ``app.flow`` (:class:`FlowControl`) wires them into the worker's fetch gate
and handler middleware for whole queues.
"""

from .breaker import BreakerDecision, BreakerState, CircuitBreaker, CircuitState, Transition
from .breaker_guard import BreakerGuard
from .concurrency import ConcurrencyLimit
from .control import FlowControl
from .fair import FairMessage, FairQueue
from .key_breaker import KeyBreaker
from .limits import FleetConcurrency, KeyRateLimit, QueueRateLimit
from .pause import KeyPauseGuard, PauseState, pause_queue, resume_queue
from .ratelimit import RateLimit, RateSetting

__all__ = [
    "BreakerDecision",
    "BreakerGuard",
    "BreakerState",
    "CircuitBreaker",
    "CircuitState",
    "ConcurrencyLimit",
    "FairMessage",
    "FairQueue",
    "FleetConcurrency",
    "FlowControl",
    "KeyBreaker",
    "KeyPauseGuard",
    "KeyRateLimit",
    "PauseState",
    "QueueRateLimit",
    "RateLimit",
    "RateSetting",
    "Transition",
    "pause_queue",
    "resume_queue",
]
