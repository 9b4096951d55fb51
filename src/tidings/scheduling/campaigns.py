"""Bulk campaigns: one message per recipient at a local wall time, resumable and cancellable.

::

    campaigns = Campaigns.of(app)
    await campaigns.schedule(
        "black-friday", "push",
        (Recipient(u.id, {"user": u.id, "template": "bf"}, u.zone) for u in users),
        local_time=time(9, 0), date=date(2026, 11, 27), throttle_per_minute=50_000)
    print(await campaigns.progress("black-friday"))
    await campaigns.cancel("black-friday")  # every message not released yet

Each recipient's message is published to go out at ``local_time`` in the recipient's own
zone (``default_zone`` when it has none), with the same daylight-saving policies as
:func:`~tidings.scheduler.publish_local`, or at one instant ``at`` for everyone. Messages
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
    tidings:campaigns                      hash campaign id -> queue (the registry)
"""

from __future__ import annotations

import asyncio
import builtins
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

import msgpack
import orjson
from redis.exceptions import NoScriptError

from ..core.config import RECORD_ID_PATTERN, Durability
from ..core.errors import (
    CampaignConflictError,
    CampaignNotFoundError,
    DurabilityError,
    PayloadError,
    ValidationError,
)
from ..core.message import (
    Message,
    Priority,
    duration_ms,
    encode,
    new_message_ids_at,
    now_ms,
    validate_headers,
)
from ..core.progress import ProgressCallback
from ..engine.broker import text
from ..engine.scripts import Script
from ..queues.queue import Outgoing, Queue, queue_keys
from . import campaign_progress
from .campaign_plan import Plan, Throttle
from .campaign_progress import (
    SWEEP,
    CampaignCounter,
    CampaignProgress,
    campaign_keys,
    counter_of,
    read_progress,
)
from .recurrence import (
    AmbiguousPolicy,
    NonexistentPolicy,
    epoch_ms,
    parse_policy,
    resolve_local_time,
)

if TYPE_CHECKING:
    from ..app import Tidings

__all__ = [
    "CampaignConflictError",
    "CampaignCounter",
    "CampaignNotFoundError",
    "CampaignProgress",
    "Campaigns",
    "Recipient",
    "campaigns",
]

_ID = re.compile(RECORD_ID_PATTERN)
_PIPELINE_CHUNKS = 2  # chunks per round trip; the next ones are built while it is out


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient: ``payload`` is their message; ``zone`` an IANA zone or None (default)."""

    id: str
    payload: Any
    zone: str | None = None


class _Scripts:
    def __init__(self) -> None:
        self.create = Script("campaign_create")
        self.publish = Script("campaign_publish")
        self.sweep = SWEEP  # campaign_progress calls it; loaded here with the rest
        self.cancel = Script("campaign_cancel")
        self.finish = Script("campaign_finish")


_SCRIPTS = _Scripts()
_INSTANCES: weakref.WeakKeyDictionary[Tidings, Campaigns] = weakref.WeakKeyDictionary()


def campaigns(app: Tidings) -> Campaigns:
    """The app's :class:`Campaigns` (created on first use; the same object afterwards)."""
    return Campaigns.of(app)


# -- the campaign API ----------------------------------------------------------------------


@dataclass(slots=True)
class _Chunk:
    keys: list[str]
    args: list[Any]
    ids: list[str]
    items: list[Outgoing]
    end: int


class Campaigns:
    """Bulk campaigns of one app; get it with :meth:`of` (or :func:`campaigns`).

    Creating it installs the :class:`CampaignCounter` middleware, so create it where the
    app is defined: workers that never create it do not count ``processed``/``failed``.
    ``clock`` (returning an aware datetime) is injectable for tests.
    """

    def __init__(self, app: Tidings, *, clock: Callable[[], datetime] | None = None) -> None:
        self.app = app
        self.clock = clock or (lambda: datetime.now(UTC))
        self.counter = counter_of(app)
        self._registry = f"{app.settings.key_prefix}:campaigns"
        _INSTANCES.setdefault(app, self)

    @classmethod
    def of(cls, app: Tidings) -> Campaigns:
        """The app's Campaigns, created on first use."""
        found = _INSTANCES.get(app)
        return found if found is not None else cls(app)

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
        for script in vars(_SCRIPTS).values():  # pipelines call by SHA: make sure they exist
            await client.execute_command("SCRIPT", "LOAD", script.source)
        registered = await client.hget(self._registry, campaign_id)
        if registered is not None and text(registered) != q.name:
            raise ValidationError("campaign_id", f"campaign {campaign_id!r} belongs to queue "
                                  f"{text(registered)!r}")
        campaign_key, pending_key, slots_key = campaign_keys(self.app.settings.key_prefix,
                                                             q.name, campaign_id)
        spec_json = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
        # The reference instant is fixed at creation, so a resumed run computes the very
        # same due times ("the next 09:00" and throttle slots included).
        ref_ms = epoch_ms(self.clock())
        created = await self.app.broker.call(
            _SCRIPTS.create, [campaign_key], [campaign_id, q.name, spec_json, ref_ms, now_ms()])
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
        chunks = self._chunks(q, campaign_id, recipients, plan, cursor, cursor_id, chunk_size,
                              [campaign_key, pending_key, slots_key])
        total = len(recipients) if isinstance(recipients, Sized) else None
        await self._send_all(q, chunks, lambda done: progress(done, total) if progress else None)
        final = await client.hget(campaign_key, "cursor")
        await self.app.broker.call(_SCRIPTS.finish, [campaign_key], [final, now_ms()])
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
                                     or throttle < 1):
            raise ValidationError("throttle_per_minute", "must be an integer >= 1")
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

    def _chunks(self, q: Queue, campaign_id: str, recipients: Iterable[Recipient],
                plan: Plan, cursor: int, cursor_id: str, chunk_size: int,
                record_keys: builtins.list[str]) -> Iterator[_Chunk]:
        """Build the publish calls, chunk by chunk, resuming after ``cursor`` recipients."""
        spec = plan.spec
        priority = Priority.parse(spec["priority"])
        base_headers: dict[str, str] = spec["headers"]
        expires_in = None if spec["expires_in"] is None else spec["expires_in"] / 1000
        dedupe_ms = int(q.config.dedupe_window * 1000)
        it = iter(recipients)
        # Skip what the interrupted run already published, checking it is the same list
        # (cheaply: the last recipient it consumed must be the same one).
        last: Recipient | None = None
        skipped = 0
        for _, recipient in zip(range(cursor), it, strict=False):
            last = recipient
            skipped += 1
        if cursor and (skipped < cursor or last is None
                       or _recipient_id(last, cursor - 1) != cursor_id):
            raise ValidationError("recipients", f"recipient #{cursor - 1} is not the one the "
                                  f"interrupted run ended with ({cursor_id!r}); pass the same "
                                  "recipients in the same order to resume")
        position = cursor
        batch: builtins.list[Recipient] = []
        for recipient in it:
            batch.append(recipient)
            if len(batch) >= chunk_size:
                yield self._chunk(q, campaign_id, batch, position, plan, priority,
                                  base_headers, expires_in, dedupe_ms, record_keys)
                position += len(batch)
                batch = []
        if batch:
            yield self._chunk(q, campaign_id, batch, position, plan, priority, base_headers,
                              expires_in, dedupe_ms, record_keys)

    def _chunk(self, q: Queue, campaign_id: str, batch: builtins.list[Recipient],
               start: int, plan: Plan, priority: Priority, base_headers: dict[str, str],
               expires_in: float | None, dedupe_ms: int,
               record_keys: builtins.list[str]) -> _Chunk:
        keys = [*q.keys, *record_keys]
        packed: builtins.list[Any] = []
        ids: builtins.list[str] = []
        items: builtins.list[Outgoing] = []
        skipped = 0
        created = now_ms()
        ttl_ms = None if expires_in is None else int(expires_in * 1000)
        limit = q.config.max_payload_bytes
        idem_prefix = f"{q._idem_prefix}campaign:{campaign_id}:"
        new_ids = new_message_ids_at(created, len(batch))
        last_id = ""
        for offset, recipient in enumerate(batch):
            rid = _recipient_id(recipient, start + offset)
            last_id = rid
            due = plan.due_ms(recipient.zone, rid)
            if due is None:
                skipped += 1
                continue
            msg_id = next(new_ids)
            headers = {**base_headers, "campaign_id": campaign_id, "recipient_id": rid}
            key = f"campaign:{campaign_id}:{rid}"
            raw = encode(Message(msg_id, q.name, recipient.payload, headers, priority, key, 0,
                                 created, due, None if ttl_ms is None else due + ttl_ms))
            if len(raw) > limit:
                raise PayloadError("payload", f"recipient {rid!r}: encoded message is "
                                   f"{len(raw)} bytes; queue {q.name!r} allows {limit}")
            packed += (msg_id, raw, due)
            keys.append(idem_prefix + rid)
            ids.append(msg_id)
            items.append(Outgoing(None, priority, key, headers))
        end = start + len(batch)
        slots = plan.throttle.take_touched() if plan.throttle is not None else []
        args = [dedupe_ms, start, end, last_id, skipped, int(priority),
                "" if ttl_ms is None else ttl_ms,
                _pack(slots) if slots else "", _pack(packed)]
        return _Chunk(keys, args, ids, items, end)

    async def _send_all(self, q: Queue, chunks: Iterator[_Chunk],
                        sent: Callable[[int], None]) -> None:
        """Send chunks in pipelines, building the next ones while one is on the wire.

        ``sent(cursor)`` is called after each round trip with the recipients done so far.
        """
        inflight: asyncio.Future[bool] | None = None
        group: builtins.list[_Chunk] = []
        try:
            for chunk in chunks:
                group.append(chunk)
                if len(group) < _PIPELINE_CHUNKS:
                    continue
                if inflight is not None and not await inflight:
                    return
                inflight = asyncio.ensure_future(self._send(q, group, sent))
                group = []
                # Building is CPU-bound and never yields: give the pipeline the few loop
                # turns it needs to reach the socket, so the server works meanwhile.
                for _ in range(4):
                    await asyncio.sleep(0)
            if inflight is not None and not await inflight:
                return
            inflight = None
            if group:
                await self._send(q, group, sent)
        finally:
            if inflight is not None and not inflight.done():
                # The caller's iterable raised: let the chunks on the wire land (they are
                # whole and recorded by the cursor) before the error propagates.
                await asyncio.gather(inflight, return_exceptions=True)

    async def _send(self, q: Queue, group: builtins.list[_Chunk],
                    sent: Callable[[int], None]) -> bool:
        """One round trip for several chunks; False once the campaign stopped scheduling."""
        client = self.app.broker.client
        durability = q.config.durability
        confirm = durability is Durability.REPLICATED or (
            durability is Durability.DISK and self.app.broker.has_waitaof)
        timeout_ms = int(q.config.durability_timeout * 1000)
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for chunk in group:
                pipe.execute_command("EVALSHA", _SCRIPTS.publish.sha, len(chunk.keys),
                                     *chunk.keys, *chunk.args)
            if confirm:
                if durability is Durability.DISK:
                    pipe.execute_command("WAITAOF", 1, 0, timeout_ms)
                else:
                    pipe.execute_command("WAIT", 1, timeout_ms)
            try:
                results = await pipe.execute()
                break
            except NoScriptError:
                if attempt:
                    raise
                # A restarted server lost its script cache; chunks already in are
                # recognised by their cursor below, so sending the group again is safe.
                await client.execute_command("SCRIPT", "LOAD", _SCRIPTS.publish.source)
        if confirm:
            confirmed = results.pop()
            ok = confirmed[0] >= 1 if durability is Durability.DISK else confirmed >= 1
            if not ok:
                raise DurabilityError(
                    f"{durability.value} durability of a campaign chunk not confirmed within "
                    f"{q.config.durability_timeout}s; schedule() again to resume",
                    [i for c in group for i in c.ids])
        bus = self.app.events
        for chunk, result in zip(group, results, strict=True):
            status = int(result[0])
            if status == 0:
                return False
            if status == -1:
                if int(result[1]) >= chunk.end:
                    continue  # this chunk already went in (a resent group)
                raise CampaignConflictError(
                    "another schedule() run of this campaign is in progress (cursor moved "
                    f"to {text(result[1])}); run one at a time")
            if bus.active:
                flags = text(result[3])
                for flag, msg_id, item in zip(flags, chunk.ids, chunk.items, strict=True):
                    if flag == "1":
                        bus.emit_published(q.name, msg_id, Priority.parse(item.priority),
                                           item.headers)
        sent(group[-1].end)
        return True

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
        prefix = self.app.settings.key_prefix
        keys = [*queue_keys(prefix, queue), *campaign_keys(prefix, queue, campaign_id)]
        done = 0
        while True:
            cancelled, released, left = await self.app.broker.call(
                _SCRIPTS.cancel, keys, [campaign_progress.SWEEP_BATCH, epoch_ms(self.clock())])
            if cancelled == -1:
                raise CampaignNotFoundError(campaign_id)
            done += int(cancelled) + int(released)
            if progress is not None:
                progress(done, done + int(left))
            if left == 0:
                break
        await self.counter.flush()
        return await self.progress(campaign_id)


def _recipient_id(recipient: Recipient, position: int) -> str:
    rid = getattr(recipient, "id", None)
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not 0 < len(rid) <= 256:
        raise ValidationError("recipients", f"recipient #{position}: id must be a non-empty "
                              "string of <= 256 characters")
    return rid


def _pack(values: builtins.list[Any]) -> bytes:
    # Redis' Lua cmsgpack reads only the old "raw" string type, not bin: no use_bin_type.
    packed: bytes = msgpack.packb(values, use_bin_type=False)
    return packed

