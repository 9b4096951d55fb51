"""One-off sends at a wall-clock time in a zone (``publish_local``)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from ..core.message import Priority
from .recurrence import (
    AmbiguousPolicy,
    NonexistentPolicy,
    ScheduleError,
    at_local,
    parse_policy,
)

if TYPE_CHECKING:
    from ..queues.queue import Queue


async def publish_local(
    queue: Queue,
    payload: Any,
    *,
    at: datetime | tuple[date, time],
    zone: str,
    nonexistent: NonexistentPolicy | str = NonexistentPolicy.NEXT_VALID,
    ambiguous: AmbiguousPolicy | str = AmbiguousPolicy.FIRST,
    priority: Priority | str = Priority.NORMAL,
    idempotency_key: str | None = None,
    headers: dict[str, str] | None = None,
    correlation_id: str | None = None,
    expires_in: timedelta | float | None = None,
    max_attempts: int | None = None,
) -> str:
    """Publish ``payload`` to be delivered when the wall clock in ``zone`` reads ``at``.

    ``at`` is a *naive* local time (or a ``(date, time)`` pair); the daylight-saving
    policies decide a time skipped by a spring-forward gap (``next_valid`` moves it forward
    by the gap, ``skip`` refuses it) or repeated by a fall-back (``first`` / ``second``).
    A time already past is delivered at once. Returns the message id::

        await publish_local(email, {"to": "a@b.c"}, at=datetime(2026, 12, 1, 9, 0),
                            zone="Asia/Tokyo")

    Bad input raises :class:`~tidings.scheduling.recurrence.ScheduleError` (a ``ValidationError``)
    naming the field: ``at`` (aware, or a time that does not exist with ``skip``), ``zone``,
    ``nonexistent`` or ``ambiguous``.
    """
    when = local_instant(at, zone, nonexistent=nonexistent, ambiguous=ambiguous)
    return await queue.publish(payload, priority=priority, idempotency_key=idempotency_key,
                               headers=headers, correlation_id=correlation_id, send_at=when,
                               expires_in=expires_in, max_attempts=max_attempts)


def local_instant(
    at: datetime | tuple[date, time],
    zone: str,
    *,
    nonexistent: NonexistentPolicy | str = NonexistentPolicy.NEXT_VALID,
    ambiguous: AmbiguousPolicy | str = AmbiguousPolicy.FIRST,
) -> datetime:
    """The UTC instant of wall time ``at`` in ``zone`` (see :func:`publish_local`)."""
    if isinstance(at, datetime) and at.tzinfo is not None:
        raise ScheduleError("at", "must be a naive local time; the zone goes in 'zone' (for an "
                            "absolute instant use publish(send_at=...))")
    if not isinstance(at, datetime | tuple):
        raise ScheduleError("at", "must be a naive datetime or a (date, time) pair")
    gap = parse_policy(NonexistentPolicy, nonexistent, "nonexistent")
    fold = parse_policy(AmbiguousPolicy, ambiguous, "ambiguous")
    if fold is AmbiguousPolicy.BOTH:
        raise ScheduleError("ambiguous", "'both' would send twice; choose 'first' or 'second'")
    try:
        return at_local(at, zone, nonexistent=gap, ambiguous=fold)
    except ScheduleError as exc:
        if exc.field == "local":
            raise ScheduleError("at", exc.reason) from None
        raise
