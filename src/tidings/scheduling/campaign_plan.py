"""When each campaign message is due: local wall time per zone, ``if_past`` and the throttle.

Pure arithmetic on the campaign's stored spec (no Redis, no clock: the reference instant is
fixed when the campaign is created), so a resumed ``schedule`` run computes the very same
due times as the run it resumes, throttle slots included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .recurrence import (
    AmbiguousPolicy,
    NonexistentPolicy,
    ScheduleError,
    epoch_ms,
    resolve_local_time,
)

_MINUTE_MS = 60_000


class Throttle:
    """Assigns due times so no more than ``per_minute`` fall in any 60 s window."""

    def __init__(self, per_minute: int, used: dict[int, int]) -> None:
        self.per_minute = per_minute
        self.used = used  # minute index -> slots taken
        self.step_ms = _MINUTE_MS / per_minute
        self._skip: dict[int, int] = {}  # full minute -> a later minute worth trying
        self.touched: set[int] = set()

    def place(self, due_ms: int) -> int:
        minute = -(-due_ms // _MINUTE_MS)  # the first minute boundary not before due
        path = []
        while self.used.get(minute, 0) >= self.per_minute:
            path.append(minute)
            minute = self._skip.get(minute, minute + 1)
        for full in path:  # path compression: a million recipients at 09:00 stay linear
            self._skip[full] = minute
        slot = self.used.get(minute, 0)
        self.used[minute] = slot + 1
        self.touched.add(minute)
        # Even spacing within the minute: slot k of every minute sits at the same offset,
        # so a window straddling two minutes holds at most per_minute slots too.
        return minute * _MINUTE_MS + int(slot * self.step_ms)

    def take_touched(self) -> list[Any]:
        """The slot counts changed since the last call, flat (minute, used, ...), to store."""
        pairs: list[Any] = []
        for minute in sorted(self.touched):
            pairs += (minute, self.used[minute])
        self.touched.clear()
        return pairs


@dataclass(slots=True)
class Plan:
    """When each recipient's message is due (deterministic, so a resumed run agrees)."""

    spec: dict[str, Any]
    ref_ms: int
    throttle: Throttle | None
    _by_zone: dict[str, int | None] | None = None

    def due_ms(self, zone: str | None, rid: str) -> int | None:
        """The due time of recipient ``rid`` in ``zone`` (None: the default), or None to skip."""
        spec = self.spec
        if spec["at"] is not None:
            natural: int | None = spec["at"]
        else:
            zone = zone or spec["default_zone"]
            if self._by_zone is None:
                self._by_zone = {}
            if zone not in self._by_zone:
                self._by_zone[zone] = self._local_due(zone, rid)
            natural = self._by_zone[zone]
        if natural is None:
            return None
        if natural < self.ref_ms:
            if spec["if_past"] == "skip":
                return None
            if self.throttle is not None:
                natural = self.ref_ms
        return natural if self.throttle is None else self.throttle.place(natural)

    def _local_due(self, zone: str, rid: str) -> int | None:
        spec = self.spec
        wall = time.fromisoformat(spec["local_time"])
        gap = NonexistentPolicy(spec["nonexistent"])
        fold = AmbiguousPolicy(spec["ambiguous"])
        try:
            tz = ZoneInfo(zone)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            raise ScheduleError("zone", f"recipient {rid!r}: unknown time zone {zone!r}") \
                from None
        if spec["date"] is not None:
            found = resolve_local_time((date.fromisoformat(spec["date"]), wall), zone,
                                       nonexistent=gap, ambiguous=fold)
            return epoch_ms(found[0]) if found else None
        ref = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=self.ref_ms)
        day = ref.astimezone(tz).date()
        for offset in range(3):  # today, else tomorrow (a skipped DST gap may cost a day)
            found = resolve_local_time((day + timedelta(days=offset), wall), zone,
                                       nonexistent=gap, ambiguous=fold)
            if found and found[0] >= ref:
                return epoch_ms(found[0])
        return None
