"""Dead-letter queue operations: list, inspect, replay (rate-limited), purge."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from .message import Message, Priority, decode, encode, from_ms
from .scripts import SCRIPTS

if TYPE_CHECKING:
    from .queue import Queue


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(slots=True)
class DeadLetter:
    """One parked message and why it was parked."""

    entry_id: str
    message_id: str
    reason: str  # max_attempts | poison | expired | undecodable | a handler's DeadLetter reason
    dead_at: datetime | None
    lane: Priority
    error: dict[str, Any]  # type, message, traceback, attempts, created_at, failed_at
    message: Message | None  # None when the entry was undecodable
    raw: bytes

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
        }


Filter = Callable[[DeadLetter], bool]


def make_filter(reason: str | None = None, error_type: str | None = None,
                before: datetime | None = None) -> Filter | None:
    """A filter for list/replay/purge by reason, error type and dead-letter time."""
    if reason is None and error_type is None and before is None:
        return None

    def matches(entry: DeadLetter) -> bool:
        return ((reason is None or entry.reason == reason)
                and (error_type is None or entry.error_type == error_type)
                and (before is None or (entry.dead_at is not None and entry.dead_at < before)))

    return matches


class DeadLetters:
    """The dead-letter queue of one queue (``queue.dlq``)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    @property
    def _key(self) -> str:
        return self.queue.keys[5]

    @staticmethod
    def _parse(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
        f = {_text(k): v for k, v in fields.items()}
        raw = f.get("m", b"")
        try:
            message: Message | None = decode(raw)
        except ValueError:
            message = None
        error_text = _text(f.get("error", b""))
        try:
            error = orjson.loads(error_text) if error_text else {}
        except orjson.JSONDecodeError:
            error = {"message": error_text}
        if not isinstance(error, dict):
            error = {"message": error}
        dead_at = f.get("dead_at")
        return DeadLetter(
            _text(entry_id), _text(f.get("i", b"")) or (message.id if message else ""),
            _text(f.get("reason", b"")), from_ms(int(dead_at)) if dead_at else None,
            Priority(int(f.get("lane", 1))), error, message, raw,
        )

    async def scan(self, where: Filter | None = None,
                   page: int = 500) -> AsyncIterator[DeadLetter]:
        """Every dead letter, oldest first, optionally filtered."""
        client = self.queue.app.broker.client
        start = "-"
        while True:
            entries = await client.xrange(self._key, min=start, count=page)
            for entry_id, fields in entries:
                item = self._parse(entry_id, fields)
                if where is None or where(item):
                    yield item
            if len(entries) < page:
                return
            start = "(" + _text(entries[-1][0])

    async def list(self, limit: int = 100,
                   where: Filter | None = None) -> builtins.list[DeadLetter]:
        out: builtins.list[DeadLetter] = []
        async for item in self.scan(where):
            out.append(item)
            if len(out) >= limit:
                break
        return out

    async def get(self, message_id: str) -> DeadLetter | None:
        info = await self.queue.inspect(message_id)
        if info is None or info.state != "dead":
            async for item in self.scan(lambda e: e.message_id == message_id):
                return item
            return None
        client = self.queue.app.broker.client
        entry_id = _text(await client.hget(self.queue.keys[7], message_id))[2:]
        entries = await client.xrange(self._key, entry_id, entry_id)
        return self._parse(*entries[0]) if entries else None

    async def count(self) -> int:
        return int(await self.queue.app.broker.client.xlen(self._key))

    async def replay(self, message_ids: builtins.list[str] | None = None, *,
                     where: Filter | None = None, rate: float | None = None,
                     batch: int = 100) -> int:
        """Move dead letters back to their lane with fresh attempts; returns how many.

        ``message_ids`` replays those; otherwise everything matching ``where`` (all when
        None). ``rate`` caps messages per second so a replay does not flood a provider that
        just recovered. Undecodable entries are never replayed (purge them).
        """
        wanted = set(message_ids) if message_ids is not None else None
        done = 0
        started = time.monotonic()
        args: builtins.list[Any] = []

        async def flush() -> None:
            nonlocal done, args
            if args:
                done += int(await self.queue.app.broker.call(SCRIPTS.dlq_replay,
                                                              self.queue.keys, args))
                args = []

        step = max(1, min(batch, int(rate))) if rate else batch
        async for item in self.scan(where):
            if item.message is None or (wanted is not None and item.message_id not in wanted):
                continue
            item.message.attempts = 0
            item.message.expires_at_ms = None
            args += (item.entry_id, int(item.lane), item.message.id, encode(item.message))
            if len(args) >= 4 * step:
                await flush()
                if rate:
                    ahead = done / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await flush()
        return done

    async def purge(self, message_ids: builtins.list[str] | None = None, *,
                    where: Filter | None = None) -> int:
        """Delete dead letters for good (those ids, or all matching ``where``)."""
        wanted = set(message_ids) if message_ids is not None else None
        entry_ids = [item.entry_id async for item in self.scan(where)
                     if wanted is None or item.message_id in wanted]
        purged = 0
        for i in range(0, len(entry_ids), 500):
            purged += int(await self.queue.app.broker.call(
                SCRIPTS.dlq_purge, self.queue.keys, entry_ids[i:i + 500]))
        return purged
