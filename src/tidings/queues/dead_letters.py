"""Dead-letter queue operations: list, inspect, replay (rate-limited), purge.

One malformed entry (an envelope that does not decode, a missing or malformed field) never
stops an operation on the others: list shows it with what could be read, replay skips it
and reports it, purge deletes it like any other.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import ResponseError

from ..core.errors import ValidationError
from ..core.message import Message, Priority, encode
from ..core.progress import ProgressCallback
from ..core.stored import decoded, lane_of, text, text_fields, time_of_ms
from ..engine.connection import raise_if_denied
from . import scripts

if TYPE_CHECKING:
    from .queue import Queue


@dataclass(slots=True)
class DeadLetterEntry:
    """One parked message and why it was parked.

    ``fields`` holds the stored entry's fields as text, ``decode_error`` why the envelope
    did not decode (``message`` is then None) and ``problems`` everything that could not be
    read, that error included: a malformed ``lane`` (then the envelope's priority, or
    normal, stands in) or ``dead_at`` (then None).
    """

    entry_id: str
    message_id: str
    reason: str  # max_attempts | poison | expired | undecodable | a DeadLetter signal's reason
    dead_at: datetime | None
    lane: Priority
    error: dict[str, Any]  # type, message, traceback, attempts, created_at, failed_at
    message: Message | None  # None when the entry was undecodable
    raw: bytes
    fields: dict[str, str] = field(default_factory=dict)
    decode_error: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def error_type(self) -> str | None:
        value = self.error.get("type")
        return None if value is None else str(value)

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry_id": self.entry_id, "message_id": self.message_id, "reason": self.reason,
            "dead_at": self.dead_at.isoformat() if self.dead_at else None,
            "priority": self.lane.label, "error": self.error,
            "attempts": self.error.get("attempts"),
            "payload": None if self.message is None else self.message.payload,
            "headers": None if self.message is None else self.message.headers,
            "fields": self.fields, "decode_error": self.decode_error,
            "problems": self.problems,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """A dead letter an operation left where it was, and why."""

    entry_id: str
    message_id: str
    reason: str


class DeadLetterCount(int):
    """How many dead letters were replayed or purged: the int callers always had, which
    also reports the entries that were skipped (``skipped``, ``skipped_ids``)."""

    skipped: tuple[Skipped, ...]

    def __new__(cls, count: int, skipped: Iterable[Skipped] = ()) -> DeadLetterCount:
        self = super().__new__(cls, count)
        self.skipped = tuple(skipped)
        return self

    @property
    def skipped_ids(self) -> builtins.list[str]:
        """The dead-letter entry ids of the skipped entries (for purge by hand)."""
        return [s.entry_id for s in self.skipped]

    def __str__(self) -> str:
        return str(int(self))  # printed as the count, as before

    def __repr__(self) -> str:
        return f"DeadLetterCount({int(self)}, skipped={len(self.skipped)})"


Filter = Callable[[DeadLetterEntry], bool]


def make_filter(reason: str | None = None, error_type: str | None = None,
                before: datetime | None = None, after: datetime | None = None) -> Filter | None:
    """A filter for list/replay/purge by reason, error type and dead-letter time (dead
    before ``before``, at or after ``after``)."""
    if reason is None and error_type is None and before is None and after is None:
        return None

    def matches(entry: DeadLetterEntry) -> bool:
        dead_at = entry.dead_at
        return ((reason is None or entry.reason == reason)
                and (error_type is None or entry.error_type == error_type)
                and (before is None or (dead_at is not None and dead_at < before))
                and (after is None or (dead_at is not None and dead_at >= after)))

    return matches


def _error_of(value: Any) -> dict[str, Any]:
    error_text = "" if value is None else text(value)
    try:
        error = orjson.loads(error_text) if error_text else {}
    except orjson.JSONDecodeError:
        error = {"message": error_text}
    return error if isinstance(error, dict) else {"message": error}


def parse_dead_letter(entry_id: Any, stored: dict[Any, Any]) -> DeadLetterEntry:
    """A dead-letter stream entry as a DeadLetterEntry; never raises, whatever it holds."""
    f = {text(k): v for k, v in stored.items()}
    message, decode_error = decoded(f.get("m"))
    problems = [decode_error] if decode_error else []
    lane = lane_of(f.get("lane", b"1"))
    if lane is None:
        problems.append(f"lane {text(f['lane'])!r} is not 0, 1 or 2")
        lane = message.priority if message is not None else Priority.NORMAL
    dead_at = time_of_ms(f["dead_at"]) if "dead_at" in f else None
    if "dead_at" in f and dead_at is None:
        problems.append(f"dead_at {text(f['dead_at'])!r} is not a time in milliseconds")
    message_id = text(f.get("i", b"")) or (
        message.id if message is not None and isinstance(message.id, str) else "")
    raw = f.get("m")
    return DeadLetterEntry(
        text(entry_id), message_id, text(f.get("reason", b"")), dead_at, lane,
        _error_of(f.get("error")), message, raw if isinstance(raw, bytes) else b"",
        text_fields(stored), decode_error, problems)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(name, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(name, f"must be a finite number > 0, got {value!r}")
    return float(value)


class DeadLetters:
    """The dead-letter queue of one queue (``queue.dlq``)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    @property
    def _key(self) -> str:
        return self.queue.keys.dlq

    async def scan(self, where: Filter | None = None,
                   page: int = 500) -> AsyncIterator[DeadLetterEntry]:
        """Every dead letter, oldest first, optionally filtered."""
        broker = self.queue.app.broker
        start = "-"
        while True:
            entries = await broker.retrying(broker.client.xrange, self._key, start, "+", page)
            for entry_id, fields in entries:
                item = parse_dead_letter(entry_id, fields)
                if where is None or where(item):
                    yield item
            if len(entries) < page:
                return
            start = "(" + text(entries[-1][0])

    async def list(self, limit: int = 100,
                   where: Filter | None = None) -> builtins.list[DeadLetterEntry]:
        out: builtins.list[DeadLetterEntry] = []
        async for item in self.scan(where):
            out.append(item)
            if len(out) >= limit:
                break
        return out

    async def get(self, message_id: str) -> DeadLetterEntry | None:
        """The dead letter of ``message_id`` (found by its index entry, else by a scan)."""
        broker = self.queue.app.broker
        where = text(await broker.client.hget(self.queue.keys.index, message_id) or b"")
        if where.startswith("x:"):
            try:
                entries = await broker.client.xrange(self._key, where[2:], where[2:])
            except ResponseError as exc:  # an index value that is not an entry id
                raise_if_denied(exc, broker.user, f"reading the DLQ of {self.queue.name}")
                entries = []
            if entries:
                return parse_dead_letter(*entries[0])
        async for item in self.scan(lambda e: e.message_id == message_id):
            return item
        return None

    async def count(self) -> int:
        return int(await self.queue.app.broker.client.xlen(self._key))

    async def replay(self, message_ids: builtins.list[str] | None = None, *,
                     where: Filter | None = None, rate: float | None = None,
                     batch: int = 100,
                     progress: ProgressCallback | None = None) -> DeadLetterCount:
        """Move dead letters back to their lane with fresh attempts; returns how many.

        ``message_ids`` replays those; otherwise everything matching ``where`` (all when
        None). ``rate`` caps messages per second so a replay does not flood a provider that
        just recovered. Entries that cannot be replayed (an envelope that does not decode,
        say) stay in the DLQ and are reported in the result's ``skipped``: purge them.
        ``progress(done, total)`` is called after each batch: the dead letters gone
        through so far, and (replaying all) how many the DLQ held when it started.
        """
        if rate is not None:
            rate = _positive(rate, "rate")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValidationError("batch", f"must be an integer >= 1, got {batch!r}")
        wanted = set(message_ids) if message_ids is not None else None
        done = seen = 0
        report = _reporter(progress, await self._total(wanted, where, progress))
        skipped: builtins.list[Skipped] = []
        clock = self.queue.app.clock
        started = clock.monotonic()
        items: builtins.list[tuple[str, int, str, bytes]] = []

        async def flush() -> None:
            nonlocal done, items
            if items:
                done += int(await self.queue.app.broker.run(
                    scripts.dlq_replay(self.queue.keys, items)))
                items = []
            report(seen)

        step = max(1, min(batch, int(rate))) if rate else batch
        async for item in self.scan(where):
            seen += 1
            if wanted is not None and item.message_id not in wanted:
                continue
            replayable = _replay_args(item)
            if isinstance(replayable, str):
                skipped.append(Skipped(item.entry_id, item.message_id, replayable))
                continue
            items.append(replayable)
            if len(items) >= step:
                await flush()
                if rate:
                    ahead = done / rate - (clock.monotonic() - started)
                    if ahead > 0:
                        await clock.sleep(ahead)
        await flush()
        return DeadLetterCount(done, skipped)

    async def purge(self, message_ids: builtins.list[str] | None = None, *,
                    where: Filter | None = None,
                    progress: ProgressCallback | None = None) -> DeadLetterCount:
        """Delete dead letters for good (those ids, or all matching ``where``).

        Entries that cannot be decoded are purged like any other (by ``--all``, a filter,
        or the id of their ``i`` field). ``progress(done, total)`` is called after each
        batch of deletions, with the number of entries to delete as ``total``.
        """
        wanted = set(message_ids) if message_ids is not None else None
        entry_ids = [item.entry_id async for item in self.scan(where)
                     if wanted is None or item.message_id in wanted]
        report = _reporter(progress, len(entry_ids))
        purged = 0
        for i in range(0, len(entry_ids), 500):
            purged += int(await self.queue.app.broker.run(
                scripts.dlq_purge(self.queue.keys, entry_ids[i:i + 500])))
            report(min(i + 500, len(entry_ids)))
        return DeadLetterCount(purged)

    async def _total(self, wanted: set[str] | None, where: Filter | None,
                     progress: ProgressCallback | None) -> int | None:
        """What a replay of everything goes through (unknown when it picks entries)."""
        if progress is None or wanted is not None or where is not None:
            return None
        return await self.count()


def _reporter(progress: ProgressCallback | None, total: int | None) -> Callable[[int], None]:
    if progress is None:
        return lambda done: None
    return lambda done: progress(done, total)


def _replay_args(item: DeadLetterEntry) -> tuple[str, int, str, bytes] | str:
    """dlq_replay's arguments for ``item``, or why it cannot be replayed."""
    message = item.message
    if message is None:
        return f"cannot be replayed: {item.decode_error}"
    if not isinstance(message.id, str) or not message.id:
        return f"cannot be replayed: the envelope's id {message.id!r} is not a string"
    message.attempts = 0
    message.expires_at_ms = None
    try:
        envelope = encode(message, check=False)  # a foreign payload moves on as it was
    except (ValueError, TypeError, OverflowError) as exc:
        return f"cannot be replayed: the envelope cannot be encoded again ({exc})"
    return item.entry_id, int(item.lane), message.id, envelope
