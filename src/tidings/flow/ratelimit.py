"""Fleet-wide token-bucket rate limits, shared by every worker through Redis.

Over-limit work is never failed: :meth:`RateLimit.acquire` grants what the bucket holds and
says how long until the next token, and the caller fetches only what was granted.

A rate and burst set at run time (:meth:`RateLimit.set_override`, ``app.flow.set_rate``,
``tidings ratelimit``) live in a hash beside the bucket, under the same hash tag, and the
acquire script reads them: every worker applies a change on its next call.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from redis.asyncio import Redis

from ..core.errors import ValidationError
from ..core.keys import KeySpace
from ..core.stored import text
from ..engine.scripts import LIBRARY

_ACQUIRE = LIBRARY["rate_limit_acquire"]

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}  # fmt: skip
_SPEC = re.compile(
    r"^\s*(?P<count>\d+(?:\.\d+)?)\s*/\s*(?P<per>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$"
)


def _unit(word: str) -> float | None:
    if word in _UNITS:
        return _UNITS[word]
    # Plurals ("mins", "hours"), but "ms" is not minutes.
    if len(word) > 2 and word.endswith("s"):
        return _UNITS.get(word[:-1])
    return None


@dataclass(frozen=True)
class RateSetting:
    """A named limit's rate and burst: as the code declares them, and any run-time override."""

    name: str
    code_rate: float
    code_burst: int
    override: tuple[float, int] | None = None

    @property
    def rate(self) -> float:
        """Tokens per second in force."""
        return self.override[0] if self.override else self.code_rate

    @property
    def burst(self) -> int:
        """Bucket size in force."""
        return self.override[1] if self.override else self.code_burst


class RateLimit:
    """A token bucket per name: ``rate`` tokens per second, holding at most ``burst``.

    One instance serves any number of names (a queue, or a per-key limit such as
    ``"sms:recipient:+4912345"``); the bucket of each lives under one key that expires once
    idle long enough to have refilled, so per-key limits do not accumulate memory. Time is
    the Redis server's, so workers with skewed clocks still share one accurate limit.
    """

    def __init__(
        self,
        client: Redis,
        rate: float | str,
        burst: int | None = None,
        *,
        prefix: str = "tidings",
    ) -> None:
        self.rate, self.burst = self.checked(rate, burst)
        self.client = client
        self.prefix = prefix

    @classmethod
    def checked(cls, rate: float | str, burst: int | None = None) -> tuple[float, int]:
        """``(tokens per second, burst)`` of a rate (``"100/s"`` or a number) and a burst,
        validated; a ``None`` burst is one second's worth of the rate."""
        try:
            value = cls.parse(rate) if isinstance(rate, str) else float(rate)
        except (TypeError, ValueError):
            value = math.nan
        if not (value > 0 and math.isfinite(value)):
            raise ValidationError("rate", f"must be a positive finite number, got {rate!r}")
        # One second's worth by default: smooth enough, yet a fetch batch is not starved.
        size = max(1, math.ceil(value)) if burst is None else burst
        whole = isinstance(size, int | float) and not isinstance(size, bool) and size == size // 1
        if not whole or size < 1:
            raise ValidationError("burst", f"must be a whole number of at least 1, got {burst!r}")
        return value, int(size)

    @staticmethod
    def parse(spec: str) -> float:
        """Tokens per second of ``"100/s"``, ``"1/min"``, ``"500/h"``, ``"10/5m"``, ``"2/day"``."""
        match = _SPEC.match(spec.lower())
        unit = _unit(match["unit"]) if match else None
        if match is None or unit is None:
            raise ValidationError(
                "rate", f"expected COUNT/[N]UNIT with UNIT one of s, min, h, day; got {spec!r}"
            )
        per = float(match["per"]) * unit if match["per"] else unit
        count = float(match["count"])
        if count <= 0 or per <= 0:
            raise ValidationError("rate", f"count and period must be positive, got {spec!r}")
        return count / per

    def key(self, name: str) -> str:
        return KeySpace(self.prefix).limiter("ratelimit", name)

    def override_key(self, name: str) -> str:
        """The hash of ``name``'s run-time rate and burst (same hash tag as its bucket)."""
        return KeySpace(self.prefix).limiter("ratelimit-override", name)

    async def set_override(self, name: str, rate: float | str,
                           burst: int | None = None) -> tuple[float, int]:
        """Use ``rate`` and ``burst`` for ``name`` on every worker from its next acquire;
        returns them as stored. The bucket keeps its tokens, capped at the new burst."""
        value, size = self.checked(rate, burst)
        await self.client.hset(self.override_key(name),
                               mapping={"rate": repr(value), "burst": size})
        return value, size

    async def clear_override(self, name: str) -> None:
        """Back to the rate and burst the code declares, from the next acquire."""
        await self.client.delete(self.override_key(name))

    async def override(self, name: str) -> tuple[float, int] | None:
        """The run-time ``(rate, burst)`` of ``name``, or None when the code's apply."""
        rate, burst = await self.client.hmget(self.override_key(name), ["rate", "burst"])
        if rate is None or burst is None:
            return None
        return float(text(rate)), int(text(burst))

    async def acquire(self, name: str, n: int = 1) -> tuple[int, float]:
        """Take up to ``n`` tokens; returns ``(granted, seconds_until_next_token)``.

        ``granted`` may be anything from 0 to ``min(n, burst)``. The wait is 0 while tokens
        remain, so a caller that got fewer than it asked for sleeps that long and asks again.
        """
        if n < 1:
            raise ValidationError("n", f"must be at least 1, got {n!r}")
        granted, wait = await _ACQUIRE(
            self.client, [self.key(name), self.override_key(name)],
            [repr(self.rate), self.burst, n]
        )
        return int(granted), float(text(wait))

    def __repr__(self) -> str:
        return f"RateLimit(rate={self.rate!r}, burst={self.burst!r}, prefix={self.prefix!r})"
