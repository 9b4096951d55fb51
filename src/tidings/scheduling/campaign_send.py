"""Sending a campaign: its recipients built into chunks, each one publish script call,
pipelined so the next chunks are built while one is on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from ..core.clock import now_ms
from ..core.errors import CampaignConflictError, PayloadError, ValidationError
from ..core.ids import new_message_ids_at
from ..core.message import Message, Priority, encode
from ..core.stored import text
from ..engine.scripts import LIBRARY
from ..queues.queue import Outgoing, Queue
from .campaign_plan import Plan

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost

_PUBLISH = LIBRARY["campaign_publish"]
_PIPELINE_CHUNKS = 2  # chunks per round trip; the next ones are built while it is out


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient: ``payload`` is their message; ``zone`` an IANA zone or None (default)."""

    id: str
    payload: Any
    zone: str | None = None


@dataclass(slots=True)
class _Chunk:
    keys: list[str]
    args: list[Any]
    ids: list[str]
    items: list[Outgoing]
    end: int


class ChunkSender:
    """Builds and sends the chunks of one ``Campaigns.schedule`` run."""

    def __init__(self, app: ExtensionHost, queue: Queue, campaign_id: str, plan: Plan,
                 record_keys: list[str]) -> None:
        self.app, self.queue, self.campaign_id = app, queue, campaign_id
        self.plan, self.record_keys = plan, record_keys

    def chunks(self, recipients: Iterable[Recipient], cursor: int, cursor_id: str,
               chunk_size: int) -> Iterator[_Chunk]:
        """Build the publish calls, chunk by chunk, resuming after ``cursor`` recipients."""
        q, plan = self.queue, self.plan
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
        batch: list[Recipient] = []
        for recipient in it:
            batch.append(recipient)
            if len(batch) >= chunk_size:
                yield self._chunk(batch, position, priority, base_headers, expires_in,
                                  dedupe_ms)
                position += len(batch)
                batch = []
        if batch:
            yield self._chunk(batch, position, priority, base_headers, expires_in,
                              dedupe_ms)

    def _chunk(self, batch: list[Recipient], start: int, priority: Priority,
               base_headers: dict[str, str], expires_in: float | None,
               dedupe_ms: int) -> _Chunk:
        q, plan, campaign_id = self.queue, self.plan, self.campaign_id
        keys = [*q.keys.script_keys, *self.record_keys]
        packed: list[Any] = []
        ids: list[str] = []
        items: list[Outgoing] = []
        skipped = 0
        created = now_ms(self.app.clock)
        ttl_ms = None if expires_in is None else int(expires_in * 1000)
        limit = q.config.max_payload_bytes
        idem_prefix = q.keys.idempotency(f"campaign:{campaign_id}:")
        chain = self.app.middleware
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
            message = Message(msg_id, q.name, recipient.payload, headers, priority, key, 0,
                              created, due, None if ttl_ms is None else due + ttl_ms)
            if chain.publishing:
                chain.before_publish(q.name, message)
            raw = encode(message)
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

    async def send_all(self, chunks: Iterator[_Chunk], sent: Callable[[int], None]) -> None:
        """Send chunks in pipelines, building the next ones while one is on the wire.

        ``sent(cursor)`` is called after each round trip with the recipients done so far.
        """
        inflight: asyncio.Future[bool] | None = None
        group: list[_Chunk] = []
        try:
            for chunk in chunks:
                group.append(chunk)
                if len(group) < _PIPELINE_CHUNKS:
                    continue
                if inflight is not None and not await inflight:
                    return
                inflight = asyncio.ensure_future(self._send(group, sent))
                group = []
                # Building is CPU-bound and never yields: give the pipeline the few loop
                # turns it needs to reach the socket, so the server works meanwhile.
                for _ in range(4):
                    await asyncio.sleep(0)
            if inflight is not None and not await inflight:
                return
            inflight = None
            if group:
                await self._send(group, sent)
        finally:
            if inflight is not None and not inflight.done():
                # The caller's iterable raised: let the chunks on the wire land (they are
                # whole and recorded by the cursor) before the error propagates.
                await asyncio.gather(inflight, return_exceptions=True)

    async def _send(self, group: list[_Chunk], sent: Callable[[int], None]) -> bool:
        """One round trip for several chunks; False once the campaign stopped scheduling."""
        q = self.queue
        results = await self.app.broker.publish_pipelined(
            q.name, [(_PUBLISH, chunk.keys, chunk.args) for chunk in group], q.config.durability,
            q.config.durability_timeout, [i for c in group for i in c.ids])
        bus = self.app.middleware
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


def _recipient_id(recipient: Recipient, position: int) -> str:
    rid = getattr(recipient, "id", None)
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not 0 < len(rid) <= 256:
        raise ValidationError("recipients", f"recipient #{position}: id must be a non-empty "
                              "string of <= 256 characters")
    return rid


def _pack(values: list[Any]) -> bytes:
    # Redis' Lua cmsgpack reads only the old "raw" string type, not bin: no use_bin_type.
    packed: bytes = msgpack.packb(values, use_bin_type=False)
    return packed

