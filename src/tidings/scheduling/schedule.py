"""A recurring schedule: its definition, validation, payload rendering and stored form.

The :class:`Schedule` record and the rules for building one; :mod:`tidings.scheduling.schedules`
stores schedules in Redis and fires them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ..core.config import QUEUE_NAME_PATTERN, RECORD_ID_PATTERN
from ..core.errors import ValidationError
from ..core.message import Priority, from_ms, validate_headers
from ..core.stored import text
from .recurrence import (
    AmbiguousPolicy,
    MissedPolicy,
    NonexistentPolicy,
    Recurrence,
    ScheduleError,
    epoch_ms,
    parse_policy,
)

__all__ = ["DEFINITION_FIELDS", "Schedule", "build_schedule", "render", "state_of"]

_ID = re.compile(RECORD_ID_PATTERN)
_MAX_SECONDS = 100 * 365.25 * 86400  # a duration (every, grace) longer is a mistake
_QUEUE = re.compile(QUEUE_NAME_PATTERN)  # QueueConfig's rule, without declaring the queue
_TOPIC = re.compile(r"^[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*$")  # tidings.routing's rule
_PLACEHOLDER = re.compile(r"\{(schedule_id|occurrence|occurrence_local|occurrence_ts)\}")
# Fields update() may change; the rest of a Schedule is identity or state.
DEFINITION_FIELDS = ("queue", "cron", "every", "timezone", "start", "end", "max_count",
                     "payload", "priority", "headers", "nonexistent", "ambiguous", "missed",
                     "grace")


def _seconds(value: timedelta | float | int | None, name: str) -> timedelta | None:
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScheduleError(name, "must be a timedelta or a number of seconds")
    if not math.isfinite(value) or abs(value) > _MAX_SECONDS:
        raise ScheduleError(name, f"must be a finite number of seconds up to {_MAX_SECONDS:g}"
                            " (100 years)")
    return timedelta(seconds=value)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A recurring schedule: its definition and (read-only) firing state.

    ``payload`` is a JSON-compatible template: in its string values ``{schedule_id}``,
    ``{occurrence}`` (ISO 8601, UTC), ``{occurrence_local}`` (ISO 8601 in ``timezone``)
    and ``{occurrence_ts}`` (Unix seconds) are replaced per occurrence; other braces are
    left alone. Each message also carries the headers ``schedule_id`` and ``occurrence``.
    ``grace``: an occurrence at most this old when a ticker sees it is on time; an older
    one was *missed* (every worker was down) and follows ``missed``.
    """

    id: str
    queue: str
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    max_count: int | None = None
    payload: Any = None
    priority: Priority = Priority.NORMAL
    headers: dict[str, str] = field(default_factory=dict)
    nonexistent: NonexistentPolicy = NonexistentPolicy.NEXT_VALID
    ambiguous: AmbiguousPolicy = AmbiguousPolicy.FIRST
    missed: MissedPolicy = MissedPolicy.ONCE
    grace: timedelta = timedelta(seconds=60)
    paused: bool = False
    # State, maintained by the tickers.
    next_fire: datetime | None = None
    last_fired: datetime | None = None
    fired_count: int = 0
    checked_until: datetime | None = None
    version: int = 0
    created_at: datetime | None = None
    last_error: str | None = None

    @property
    def recurrence(self) -> Recurrence:
        return Recurrence(self.cron, self.every, self.timezone, self.start, self.end,
                          self.max_count, self.nonexistent, self.ambiguous)

    @property
    def state(self) -> str:
        """``active``, ``paused`` or ``finished`` (end passed or max_count reached)."""
        if self.paused:
            return "paused"
        return "active" if self.next_fire is not None else "finished"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-compatible view (what ``tidings schedules show --json`` prints)."""
        def out(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, timedelta):
                return value.total_seconds()
            if isinstance(value, Priority):
                return value.label
            return value

        data = {f.name: out(getattr(self, f.name)) for f in fields(self)}
        data["state"] = self.state
        return data

    # -- storage -----------------------------------------------------------------------

    def _definition_json(self) -> bytes:
        return orjson.dumps({
            "queue": self.queue, "cron": self.cron,
            "every": None if self.every is None else self.every.total_seconds(),
            "timezone": self.timezone,
            "start": None if self.start is None else self.start.isoformat(),
            "end": None if self.end is None else self.end.isoformat(),
            "max_count": self.max_count, "payload": self.payload,
            "priority": self.priority.label, "headers": self.headers,
            "nonexistent": self.nonexistent.value, "ambiguous": self.ambiguous.value,
            "missed": self.missed.value, "grace": self.grace.total_seconds(),
        })

    @classmethod
    def _from_hash(cls, raw: Mapping[Any, Any]) -> Schedule:
        h = {text(k): text(v) for k, v in raw.items()}
        d = orjson.loads(h["def"])

        def when(name: str) -> datetime | None:
            value = h.get(name) or ""
            return from_ms(int(value)) if value else None

        def iso(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value)

        return cls(
            id=h["id"], queue=d["queue"], cron=d["cron"],
            every=None if d["every"] is None else timedelta(seconds=d["every"]),
            timezone=d["timezone"], start=iso(d["start"]), end=iso(d["end"]),
            max_count=d["max_count"], payload=d["payload"], priority=Priority.parse(d["priority"]),
            headers=d["headers"], nonexistent=NonexistentPolicy(d["nonexistent"]),
            ambiguous=AmbiguousPolicy(d["ambiguous"]), missed=MissedPolicy(d["missed"]),
            grace=timedelta(seconds=d["grace"]), paused=h.get("paused") == "1",
            next_fire=when("next_fire"), last_fired=when("last_fired"),
            fired_count=int(h.get("fired_count") or 0), checked_until=when("checked_until"),
            version=int(h.get("version") or 0), created_at=when("created_at"),
            last_error=h.get("last_error") or None,
        )


TOPIC_TARGET = "topic:"  # a schedule's queue field "topic:order.shipped" targets a topic


def topic_of(target: str) -> str | None:
    """The topic a schedule publishes to, or None when it targets a queue."""
    return target[len(TOPIC_TARGET):] if target.startswith(TOPIC_TARGET) else None


def _is_topic_target(target: str) -> bool:
    topic = topic_of(target)
    return topic is not None and _TOPIC.match(topic) is not None


def build_schedule(schedule_id: str, queue: str, **options: Any) -> Schedule:
    """Validate everything a caller may pass and return a Schedule (state left default)."""
    if not isinstance(schedule_id, str) or not _ID.match(schedule_id):
        raise ScheduleError("schedule_id", "must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    if not isinstance(queue, str) or not (_QUEUE.match(queue) or _is_topic_target(queue)):
        raise ScheduleError("queue", "must be a queue name: 1-64 characters of A-Z a-z 0-9 _ . -")
    opts = dict(options)
    opts["every"] = _seconds(opts.get("every"), "every")
    grace = _seconds(opts.get("grace", timedelta(seconds=60)), "grace")
    if grace is None or grace < timedelta(0):
        raise ScheduleError("grace", "must not be negative")
    opts["grace"] = grace
    opts["priority"] = Priority.parse(opts.get("priority", Priority.NORMAL))
    try:
        opts["headers"] = validate_headers(opts.get("headers"))
    except ValidationError as exc:
        raise ScheduleError("headers", exc.reason) from None
    opts["nonexistent"] = parse_policy(NonexistentPolicy, opts.get("nonexistent", "next_valid"),
                                       "nonexistent")
    opts["ambiguous"] = parse_policy(AmbiguousPolicy, opts.get("ambiguous", "first"),
                                     "ambiguous")
    opts["missed"] = parse_policy(MissedPolicy, opts.get("missed", "once"), "missed")
    try:
        orjson.dumps(opts.get("payload"))
    except TypeError as exc:
        raise ScheduleError("payload", f"must be JSON-compatible: {exc}") from None
    schedule = Schedule(schedule_id, queue, **opts)
    schedule.recurrence  # noqa: B018 - validates cron/every/timezone/start/end/max_count
    return schedule


def render(template: Any, schedule: Schedule, occurrence: datetime) -> Any:
    """The payload of one occurrence: placeholders replaced in every string value."""
    values = {
        "schedule_id": schedule.id,
        "occurrence": occurrence.astimezone(UTC).isoformat(),
        "occurrence_local": occurrence.astimezone(schedule.recurrence.zone).isoformat(),
        "occurrence_ts": str(epoch_ms(occurrence) // 1000),
    }

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: values[m.group(1)], value) if "{" in value \
                else value
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk(template)


def state_of(schedule: Schedule) -> dict[str, Any]:
    """The firing state of ``schedule``: what a redefinition keeps (``dataclasses.replace``
    keywords)."""
    names = ("next_fire", "last_fired", "fired_count", "checked_until", "version",
             "created_at", "last_error")
    return {name: getattr(schedule, name) for name in names}
