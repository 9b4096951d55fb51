"""Fleet-wide token-bucket rate limits, shared by every worker through Redis.

Over-limit work is never failed: :meth:`RateLimit.acquire` grants what the bucket holds and
says how long until the next token, and the caller fetches only what was granted.
"""

from __future__ import annotations

import math
import re

from redis.asyncio import Redis

from ..core.errors import ValidationError
from ..engine.broker import text
from ..engine.scripts import Script
from ._keys import hash_tagged

_ACQUIRE = Script("rate_limit_acquire")

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
        self.rate = self.parse(rate) if isinstance(rate, str) else float(rate)
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValidationError("rate", f"must be a positive number, got {rate!r}")
        # One second's worth by default: smooth enough, yet a fetch batch is not starved.
        self.burst = max(1, math.ceil(self.rate)) if burst is None else burst
        if self.burst < 1:
            raise ValidationError("burst", f"must be at least 1, got {burst!r}")
        self.client = client
        self.prefix = prefix

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
        return hash_tagged(self.prefix, "ratelimit", name)

    async def acquire(self, name: str, n: int = 1) -> tuple[int, float]:
        """Take up to ``n`` tokens; returns ``(granted, seconds_until_next_token)``.

        ``granted`` may be anything from 0 to ``min(n, burst)``. The wait is 0 while tokens
        remain, so a caller that got fewer than it asked for sleeps that long and asks again.
        """
        if n < 1:
            raise ValidationError("n", f"must be at least 1, got {n!r}")
        granted, wait = await _ACQUIRE(
            self.client, [self.key(name)], [repr(self.rate), self.burst, n]
        )
        return int(granted), float(text(wait))

    def __repr__(self) -> str:
        return f"RateLimit(rate={self.rate!r}, burst={self.burst!r}, prefix={self.prefix!r})"
