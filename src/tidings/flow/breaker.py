"""Circuit breakers whose state lives in Redis, so every worker process shares it.

closed --(too many failures in the window)--> open --(open_for elapsed)--> half_open
half_open lets ``half_open_probes`` calls through; their success closes the breaker, any
failure reopens it. Each state change is returned (:class:`Transition`) by the call that
made it, so exactly one worker reports it as a lifecycle event.

All time comes from the injectable ``clock`` and is passed to the scripts, so tests move a
fake clock instead of sleeping; every process sharing a breaker needs the same clock source.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from ..core.errors import ValidationError
from ..core.keys import KeySpace
from ..core.stored import text
from ..engine.scripts import LIBRARY

_ALLOW = LIBRARY["breaker_allow"]
_RECORD = LIBRARY["breaker_record"]
_RESET = LIBRARY["breaker_reset"]

_KIND = "breaker"
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_BUCKET_FIELD = re.compile(r"^([cf]):(-?\d+)$")


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, reported once: by the call that made it."""

    from_state: CircuitState
    to_state: CircuitState


@dataclass(frozen=True, slots=True)
class BreakerDecision:
    """Whether a call may go through now; if not, ``retry_after`` seconds is worth waiting."""

    allowed: bool
    state: CircuitState
    retry_after: float
    transition: Transition | None = None


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A snapshot. ``failures``/``calls`` count the rolling window as of now.

    ``opened_at`` and ``next_probe_at`` (when probing starts, or started) are ``clock()``
    seconds, None while closed. ``state`` is as stored: an open breaker past
    ``next_probe_at`` turns half-open on the next :meth:`CircuitBreaker.allow`.
    """

    state: CircuitState
    failures: int
    calls: int
    opened_at: float | None
    next_probe_at: float | None
    probes_in_flight: int = 0


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class CircuitBreaker:
    """Breakers by name (a handler, a downstream such as ``"provider:twilio"``).

    Trips on ``failure_threshold`` failures within the rolling ``window`` seconds, and/or on
    a failure share of at least ``failure_rate`` once the window holds ``min_calls`` calls;
    set either to None to disable it. The window is ``buckets`` slices of ``window /
    buckets`` seconds, so it slides in steps of one slice. A probe whose outcome is not
    recorded within ``probe_timeout`` seconds (its worker died) frees its slot.

    The one use of real time: a closed breaker's key expires after a ``window`` of server
    time without calls (its counts would all be stale by then); open ones never expire.
    """

    def __init__(
        self,
        client: Redis,
        *,
        failure_threshold: int | None = 5,
        failure_rate: float | None = None,
        min_calls: int = 10,
        window: float = 60.0,
        open_for: float = 30.0,
        half_open_probes: int = 1,
        probe_timeout: float = 60.0,
        buckets: int = 10,
        prefix: str = "tidings",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if failure_threshold is None and failure_rate is None:
            raise ValidationError("failure_threshold", "set failure_threshold or failure_rate")
        if failure_threshold is not None and failure_threshold < 1:
            raise ValidationError("failure_threshold", f"must be >= 1, got {failure_threshold!r}")
        if failure_rate is not None and not 0 < failure_rate <= 1:
            raise ValidationError("failure_rate", f"must be in (0, 1], got {failure_rate!r}")
        for field, value in (("min_calls", min_calls), ("half_open_probes", half_open_probes),
                             ("buckets", buckets)):  # fmt: skip
            if value < 1:
                raise ValidationError(field, f"must be >= 1, got {value!r}")
        for field, seconds in (("window", window), ("open_for", open_for),
                               ("probe_timeout", probe_timeout)):  # fmt: skip
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ValidationError(field, f"must be positive seconds, got {seconds!r}")
        self.client = client
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.window = window
        self.open_for = open_for
        self.half_open_probes = half_open_probes
        self.probe_timeout = probe_timeout
        self.buckets = buckets
        self.prefix = prefix
        self.clock = clock
        self._bucket_ms = _ms(window / buckets)

    def key(self, name: str) -> str:
        return KeySpace(self.prefix).limiter(_KIND, name)

    def _now_ms(self) -> int:
        return math.floor(self.clock() * 1000)

    async def allow(self, name: str) -> BreakerDecision:
        """May a call go through? In half-open, a True is one of the probe slots."""
        allowed, state, wait_ms, before, after = await _ALLOW(
            self.client,
            [self.key(name)],
            [self._now_ms(), _ms(self.open_for), self.half_open_probes, _ms(self.probe_timeout)],
        )
        return BreakerDecision(
            allowed=bool(int(allowed)),
            state=CircuitState(text(state)),
            retry_after=int(wait_ms) / 1000,
            transition=_transition(text(before), text(after)),
        )

    async def record(self, name: str, success: bool) -> Transition | None:
        """Count the outcome of a call; returns the state change it caused, if any."""
        reply = await _RECORD(
            self.client,
            [self.key(name)],
            [
                self._now_ms(),
                1 if success else 0,
                self._bucket_ms,
                self.buckets,
                self.failure_threshold or 0,
                -1 if self.failure_rate is None else repr(self.failure_rate),
                self.min_calls,
                self.half_open_probes,
                self._bucket_ms * self.buckets,
            ],
        )
        return _transition(text(reply[0]), text(reply[1])) if reply else None

    async def reset(self, name: str) -> Transition | None:
        """Force the breaker closed with an empty window; returns the change, if any."""
        before = text(await _RESET(self.client, [self.key(name)], []))
        return _transition(before, CircuitState.CLOSED)

    async def state(self, name: str) -> BreakerState:
        return self._decode(await self.client.hgetall(self.key(name)))

    async def list_states(self, prefix: str = "") -> dict[str, BreakerState]:
        """The breakers whose names start with ``prefix``, by name.

        Closed breakers idle for a whole window have expired and are not listed.
        """
        head = KeySpace(self.prefix).limiter(_KIND, "x")[:-2]  # the key up to and with "{"
        pattern = _GLOB_SPECIAL.sub(r"\\\1", head + prefix) + "*}"
        names: list[str] = []
        async for key in self.client.scan_iter(match=pattern, count=500):
            names.append(text(key)[len(head) : -1])
        states: dict[str, BreakerState] = {}
        for name in sorted(names):
            states[name] = await self.state(name)
        return states

    def _decode(self, raw: dict[Any, Any]) -> BreakerState:
        fields = {text(k): text(v) for k, v in raw.items()}
        oldest = self._now_ms() // self._bucket_ms - self.buckets + 1
        calls = failures = 0
        for field, value in fields.items():
            match = _BUCKET_FIELD.match(field)
            if match and int(match[2]) >= oldest:
                if match[1] == "c":
                    calls += int(value)
                else:
                    failures += int(value)
        state = CircuitState(fields.get("s", CircuitState.CLOSED))
        if state is CircuitState.CLOSED:
            return BreakerState(state, failures, calls, None, None)
        opened_ms = int(fields.get("o", 0))
        return BreakerState(
            state,
            failures,
            calls,
            opened_at=opened_ms / 1000,
            next_probe_at=(opened_ms + _ms(self.open_for)) / 1000,
            probes_in_flight=int(fields.get("p", 0)),
        )

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(failure_threshold={self.failure_threshold!r}, "
            f"failure_rate={self.failure_rate!r}, min_calls={self.min_calls!r}, "
            f"window={self.window!r}, open_for={self.open_for!r}, "
            f"half_open_probes={self.half_open_probes!r}, prefix={self.prefix!r})"
        )


def _transition(before: str, after: str) -> Transition | None:
    if not before or not after or before == after:
        return None
    return Transition(CircuitState(before), CircuitState(after))


def breaker_view(name: str, state: BreakerState, config: dict[str, Any]) -> dict[str, Any]:
    """One breaker as ``tidings breakers --json`` and ``GET /v1/breakers`` show it (times
    as ISO 8601, UTC)."""
    from datetime import UTC, datetime

    def when(seconds: float | None) -> str | None:
        return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()

    return {"name": name, "state": state.state.value, "failures": state.failures,
            "calls": state.calls, "opened_at": when(state.opened_at),
            "next_probe_at": when(state.next_probe_at),
            "probes_in_flight": state.probes_in_flight, "queues": config.get("queues", []),
            "config": config}
