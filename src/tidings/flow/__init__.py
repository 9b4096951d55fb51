"""Fleet-wide flow control on Redis: rate limits, concurrency caps and circuit breakers."""

from .breaker import BreakerState, CircuitBreaker, CircuitState, Decision, Transition
from .concurrency import ConcurrencyLimit
from .ratelimit import RateLimit

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitState",
    "ConcurrencyLimit",
    "Decision",
    "RateLimit",
    "Transition",
]
