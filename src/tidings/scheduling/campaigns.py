"""Bulk campaigns: one message per recipient at a local wall time, resumable and cancellable.

::

    campaigns = Campaigns.of(app)
    await campaigns.schedule(
        "black-friday", "push",
        (Recipient(u.id, {"user": u.id, "template": "bf"}, u.zone) for u in users),
        local_time=time(9, 0), date=date(2026, 11, 27), throttle_per_minute=50_000)
    print(await campaigns.progress("black-friday"))
    await campaigns.pause("black-friday")   # hold what is not released yet
    await campaigns.resume("black-friday")  # due times moved later by the pause
    await campaigns.update("black-friday", throttle_per_minute=20_000)
    await campaigns.cancel("black-friday")  # every message not released yet
    await campaigns.delete("black-friday")  # only once finished or cancelled

Each recipient's message is published to go out at ``local_time`` in the recipient's own
zone (``default_zone`` when it has none), with the same daylight-saving policies as
:func:`~tidings.publish_local`, or at one instant ``at`` for everyone. Messages
carry the headers ``campaign_id`` and ``recipient_id`` and the idempotency key
``campaign:<campaign id>:<recipient id>``.

Chunks of ``chunk_size`` recipients are published by one script each (several per pipeline
round trip), which atomically also records the campaign's counters, its *resume cursor* and
which of its messages still wait in the delayed set. A producer that crashed half way calls
``schedule`` again with the same arguments and the same recipients in the same order: the
chunks already in are skipped, and the idempotency keys make even a different order safe
within the queue's dedupe window.

Counters (see :class:`CampaignProgress`): ``scheduled`` messages published; ``released``
ones that left the delayed set for a lane (counted when ``progress``/``cancel`` run and by
workers as they go); ``processed`` (acked) and ``failed`` (dead-lettered or expired), counted
by the :class:`CampaignCounter` middleware in the workers; ``cancelled``. How they are kept
is in :mod:`tidings.campaign_progress`; due times and the throttle in
:mod:`tidings.campaign_plan`.

Throttle: ``throttle_per_minute=N`` spreads the due times at enqueue so that no more than N
messages fall due in any minute: each recipient takes the first minute, at or after its own
due time, that has room, at an evenly spaced slot within it (so any 60-second window holds at
most N, not just calendar minutes). Messages may so go out later than their local time, never
earlier. The limit is per campaign, and it bounds release (workers promote at due time);
it does not slow down workers that fall behind.

Redis layout, under the queue's hash tag (so the scripts touch one slot)::

    tidings:{push}:campaign:<id>           hash: spec, status, cursor, counters
    tidings:{push}:campaign:<id>:pending   zset msg id -> due ms, until released or cancelled
    tidings:{push}:campaign:<id>:slots     hash minute -> messages due (throttle state)
    tidings:{push}:campaign:<id>:held      zset msg id -> due ms, held out by a pause
    tidings:campaigns                      hash campaign id -> queue (the registry)
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterable, Sized
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

import orjson

from ..core.clock import now_ms, utc_now
from ..core.config import RECORD_ID_PATTERN
from ..core.errors import (
    CampaignConflictError,
    CampaignNotFoundError,
    ValidationError,
)
from ..core.message import Priority, duration_ms, validate_headers
from ..core.progress import ProgressCallback
from ..core.stored import text
from ..engine.scripts import LIBRARY
from ..queues.queue import Queue
from . import campaign_control, campaign_progress
from .campaign_plan import Plan, Throttle
from .campaign_progress import (
    CampaignCounter,
    CampaignProgress,
    read_progress,
)
from .campaign_send import ChunkSender, Recipient
from .recurrence import (
    AmbiguousPolicy,
    NonexistentPolicy,
    epoch_ms,
    parse_policy,
    resolve_local_time,
)

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost

__all__ = [
    "CampaignConflictError",
    "CampaignCounter",
    "CampaignNotFoundError",
    "CampaignProgress",
    "Campaigns",
    "Recipient",
]

_ID = re.compile(RECORD_ID_PATTERN)


_CREATE, _CANCEL, _FINISH = (LIBRARY[f"campaign_{n}"] for n in ("create", "cancel", "finish"))


# -- the campaign API ----------------------------------------------------------------------


class Campaigns:
    """Bulk campaigns of one app; get it with :meth:`of`.

    Creating it installs the :class:`CampaignCounter` middleware, so create it where the
    app is defined: workers that never create it do not count ``processed``/``failed``.
    ``clock`` (returning an aware datetime; default: the app's clock) is injectable for
    tests.
    """

    def __init__(self, app: ExtensionHost, *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.app = app
        self.clock = clock or (lambda: utc_now(app.clock))
        self.counter = CampaignCounter(app)
        self._registry = app.key_space.campaign_registry
        app.adopt(self)
        app.add_middleware(self.counter)

    @classmethod
    def of(cls, app: Any) -> Campaigns:
        """The app's Campaigns, created on first use."""
        found: Campaigns = app.extension(cls)
        return found

    async def _client(self) -> Any:
        if not self.app.broker.connected:
            await self.app.connect()
        return self.app.broker.client


    # -- scheduling --------------------------------------------------------------------

    async def schedule(
        self,
        campaign_id: str,
        queue: str | Queue,
        recipients: Iterable[Recipient],
        *,
        local_time: time | None = None,
        at: datetime | None = None,
        date: date | None = None,
        default_zone: str = "UTC",
        throttle_per_minute: int | None = None,
        chunk_size: int = 1000,
        priority: Priority | str = Priority.NORMAL,
        headers: dict[str, str] | None = None,
        expires_in: timedelta | float | None = None,
        nonexistent: NonexistentPolicy | str = NonexistentPolicy.NEXT_VALID,
        ambiguous: AmbiguousPolicy | str = AmbiguousPolicy.FIRST,
        if_past: Literal["send", "skip"] = "send",
        progress: ProgressCallback | None = None,
    ) -> CampaignProgress:
        """Publish one message per recipient; returns the campaign's progress.

        Give ``local_time`` (each recipient's wall clock, on ``date`` or else at its next
        occurrence after the campaign was created) or ``at`` (one aware instant for all).
        A time already past is sent at once (``if_past='send'``) or not at all (``'skip'``).
        ``expires_in`` counts from each message's own due time (a message not delivered
        within it after its local time is dropped or dead-lettered, per the queue).
        Calling it again for the same ``campaign_id`` resumes an interrupted run (the
        arguments must be the same; the recipients too, in the same order) and returns
        at once for a campaign already fully scheduled or cancelled. ``progress(done,
        total)`` is called as chunks go in: ``done`` recipients so far (resumed ones
        included), ``total`` the length of ``recipients`` if it has one, else None::

            await campaigns.schedule("welcome-2026-12", "email", recipients,
                                     local_time=time(9, 0), date=date(2026, 12, 1))
        """
        q = self.app.get_queue(queue)
        spec = self._spec(campaign_id, q, local_time, at, date, default_zone,
                          throttle_per_minute, chunk_size, priority, headers, expires_in,
                          nonexistent, ambiguous, if_past)
        client = await self._client()
        registered = await client.hget(self._registry, campaign_id)
        if registered is not None and text(registered) != q.name:
            raise ValidationError("campaign_id", f"campaign {campaign_id!r} belongs to queue "
                                  f"{text(registered)!r}")
        ckeys = q.keys.campaign(campaign_id)
        campaign_key, pending_key, slots_key = ckeys.record, ckeys.pending, ckeys.slots
        spec_json = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
        # The reference instant is fixed at creation, so a resumed run computes the very
        # same due times ("the next 09:00" and throttle slots included).
        ref_ms = epoch_ms(self.clock())
        created = await self.app.broker.call(
            _CREATE, [campaign_key], [campaign_id, q.name, spec_json, ref_ms,
                                      now_ms(self.app.clock)])
        await client.hset(self._registry, campaign_id, q.name)
        cursor, cursor_id = 0, ""
        if created[0] != 1:
            record = {text(k): text(v) for k, v in zip(created[1][::2], created[1][1::2],
                                                       strict=True)}
            if record["spec"].encode() != spec_json:
                raise ValidationError("campaign_id", f"campaign {campaign_id!r} exists with "
                                      "other parameters; use another id")
            if record["status"] != "scheduling":
                return await self.progress(campaign_id)
            ref_ms, cursor, cursor_id = (int(record["ref_ms"]), int(record["cursor"]),
                                         record["cursor_id"])
        throttle = None
        if throttle_per_minute is not None:
            used = {int(k): int(v) for k, v in (await client.hgetall(slots_key)).items()}
            throttle = Throttle(throttle_per_minute, used)
        plan = Plan(spec, ref_ms, throttle)
        sender = ChunkSender(self.app, q, campaign_id, plan,
                             [campaign_key, pending_key, slots_key])
        total = len(recipients) if isinstance(recipients, Sized) else None
        await sender.send_all(sender.chunks(recipients, cursor, cursor_id, chunk_size),
                              lambda done: progress(done, total) if progress else None)
        final = await client.hget(campaign_key, "cursor")
        await self.app.broker.call(_FINISH, [campaign_key], [final, now_ms(self.app.clock)])
        return await self.progress(campaign_id)

    def _spec(self, campaign_id: str, queue: Queue, local_time: time | None,
              at: datetime | None, day: date | None, default_zone: str,
              throttle: int | None, chunk_size: int, priority: Priority | str,
              headers: dict[str, str] | None, expires_in: timedelta | float | None,
              nonexistent: NonexistentPolicy | str, ambiguous: AmbiguousPolicy | str,
              if_past: str) -> dict[str, Any]:
        """Validate the arguments; the result is stored and compared on resume."""
        if not isinstance(campaign_id, str) or not _ID.match(campaign_id):
            raise ValidationError("campaign_id", "must be 1-128 characters of A-Z a-z 0-9 _ . : -")
        if (local_time is None) == (at is None):
            raise ValidationError("local_time", "give exactly one of local_time and at")
        if local_time is not None and (not isinstance(local_time, time)
                                       or local_time.tzinfo is not None):
            raise ValidationError("local_time", "must be a naive datetime.time (wall clock)")
        if at is not None and (not isinstance(at, datetime) or at.utcoffset() is None):
            raise ValidationError("at", "must be a timezone-aware datetime")
        if day is not None and (at is not None or not isinstance(day, date)
                                or isinstance(day, datetime)):
            raise ValidationError("date", "must be a datetime.date, and only with local_time")
        resolve_local_time(datetime(2000, 1, 1), default_zone)  # raises naming "zone"
        if throttle is not None and (isinstance(throttle, bool) or not isinstance(throttle, int)
                                     or not 1 <= throttle <= 10**9):
            raise ValidationError("throttle_per_minute", "must be an integer from 1 to 10**9")
        if day is not None and isinstance(day, date) and not 1970 <= day.year <= 9998:
            raise ValidationError("date", "must be within the years 1970 to 9998")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) \
                or not 1 <= chunk_size <= 10_000:
            raise ValidationError("chunk_size", "must be an integer within 1..10000")
        if if_past not in ("send", "skip"):
            raise ValidationError("if_past", "must be 'send' or 'skip'")
        fold = parse_policy(AmbiguousPolicy, ambiguous, "ambiguous")
        if fold is AmbiguousPolicy.BOTH:
            raise ValidationError("ambiguous", "'both' would send twice; choose 'first' or "
                                  "'second'")
        reserved = {"campaign_id", "recipient_id"} & set(headers or {})
        if reserved:
            raise ValidationError("headers", f"{', '.join(sorted(reserved))} is set by the "
                                  "campaign")
        return {
            "queue": queue.name,
            "local_time": None if local_time is None else local_time.isoformat(),
            "at": None if at is None else epoch_ms(at),
            "date": None if day is None else day.isoformat(),
            "default_zone": default_zone, "throttle_per_minute": throttle,
            "priority": Priority.parse(priority).label,
            "headers": validate_headers(headers),
            "expires_in": None if expires_in is None else duration_ms(expires_in, "expires_in"),
            "nonexistent": parse_policy(NonexistentPolicy, nonexistent, "nonexistent").value,
            "ambiguous": fold.value, "if_past": if_past,
        }

    # -- observing and cancelling --------------------------------------------------------

    async def _queue_of(self, campaign_id: str) -> str:
        client = await self._client()
        queue = await client.hget(self._registry, campaign_id)
        if queue is None:
            raise CampaignNotFoundError(campaign_id)
        return text(queue)

    async def progress(self, campaign_id: str) -> CampaignProgress:
        """The campaign's counters (counting the messages released since the last look)."""
        return await read_progress(self.app, await self._queue_of(campaign_id), campaign_id)

    async def list(self) -> builtins.list[CampaignProgress]:
        """Every campaign, newest first."""
        client = await self._client()
        ids = sorted(text(i) for i in await client.hkeys(self._registry))
        found = []
        for campaign_id in ids:
            try:
                found.append(await self.progress(campaign_id))
            except CampaignNotFoundError:
                continue
        far = datetime.min.replace(tzinfo=UTC)
        return sorted(found, key=lambda p: (p.created_at or far, p.id), reverse=True)

    async def cancel(self, campaign_id: str, *,
                     progress: ProgressCallback | None = None) -> CampaignProgress:
        """Cancel every message of the campaign not released yet; returns the final counts.

        Safe while workers release messages: each message ends either cancelled or
        released (then processed as usual), never both. A ``schedule`` run still going
        stops at its next chunk. Cancelling again is harmless. ``progress(done, total)``
        is called after each batch: pending messages handled so far (cancelled, or found
        released), and that plus those left.
        """
        queue = await self._queue_of(campaign_id)
        queue_keys = self.app.key_space.queue(queue)
        record = queue_keys.campaign(campaign_id)
        keys = [*queue_keys.script_keys, record.record, record.pending, record.slots,
                record.held]
        done = 0
        while True:
            cancelled, released, left = await self.app.broker.call(
                _CANCEL, keys, [campaign_progress.SWEEP_BATCH, epoch_ms(self.clock())])
            if cancelled == -1:
                raise CampaignNotFoundError(campaign_id)
            done += int(cancelled) + int(released)
            if progress is not None:
                progress(done, done + int(left))
            if left == 0:
                break
        await self.counter.flush()
        return await self.progress(campaign_id)

    # -- pausing, updating, deleting (see tidings.scheduling.campaign_control) -----------

    async def pause(self, campaign_id: str) -> CampaignProgress:
        """Hold every message of the campaign not released yet (released ones go on).

        Only a fully scheduled campaign (not while ``schedule`` runs, not cancelled:
        CampaignConflictError); pausing again is harmless.
        """
        queue = await self._queue_of(campaign_id)
        await campaign_control.pause(self.app, queue, campaign_id, epoch_ms(self.clock()))
        return await self.progress(campaign_id)

    async def resume(self, campaign_id: str) -> CampaignProgress:
        """Release a paused campaign again from where it stopped: every held message's due
        time moves later by the length of the pause (no burst). Harmless when not paused."""
        queue = await self._queue_of(campaign_id)
        await campaign_control.resume(self.app, queue, campaign_id, epoch_ms(self.clock()))
        return await self.progress(campaign_id)

    async def update(self, campaign_id: str, **changes: Any) -> CampaignProgress:
        """Change ``throttle_per_minute`` or ``at`` of a scheduled campaign (paused or not).

        Any other field raises ValidationError naming it; ``at`` only before any message
        was released, and both only for campaigns sent ``at`` one instant::

            await campaigns.update("bf", throttle_per_minute=10_000)
        """
        queue = await self._queue_of(campaign_id)
        await campaign_control.update(self.app, queue, campaign_id, self.clock(), changes)
        return await self.progress(campaign_id)

    async def delete(self, campaign_id: str) -> None:
        """Remove a finished (nothing pending) or cancelled campaign and its keys; else
        CampaignConflictError."""
        queue = await self._queue_of(campaign_id)
        await campaign_control.delete(self.app, queue, campaign_id)
        client = await self._client()
        await client.hdel(self._registry, campaign_id)
