"""Settling delivered messages: coalesced acks, retries, dead letters, hand-backs.

Acks are coalesced: whatever finished while the previous ack round trip was in flight
goes out in the next one, so acking costs one round trip per batch under load and adds no
delay when idle. Every settle carries the lease token; the server refuses a stale one
(the message was reclaimed), which is reported as a lost lease.

Nothing here may leave a message held for ever: a settle that the server keeps refusing
for a reason that retrying cannot cure is dead-lettered as ``settle_failed``, and if even
that fails the lease is let go, so the message is reclaimed and delivered again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import OutOfMemoryError

from ..core.events import EventKind
from ..core.message import Message, encode
from ..engine.connection import TRANSIENT, refusal_of
from ..queues import scripts
from .backoff import Backoff
from .coalesce import Coalescer
from .retry import Action, decide

if TYPE_CHECKING:
    from .runner import QueueRunner

log = logging.getLogger("tidings.worker")
ACK_BATCH = 2000  # messages per ack script call (the script unpacks them into one XACK)
RETRYABLE = (*TRANSIENT, OutOfMemoryError)


class Settler:
    """Settles the messages of one :class:`QueueRunner`."""

    def __init__(self, runner: QueueRunner) -> None:
        self.runner = runner
        self.acks: Coalescer[tuple[Message, float]] = Coalescer(self._ack_batch, ACK_BATCH)

    # -- acks --------------------------------------------------------------------------

    def ack(self, msg: Message, duration: float) -> None:
        self.runner.settling.add(f"{msg.lane}{msg.entry_id}")
        self.acks.add((msg, duration))

    async def flushed(self) -> None:
        await self.acks.flushed()

    async def _ack_batch(self, batch: list[tuple[Message, float]]) -> None:
        runner = self.runner
        settles = [(msg.lane, msg.entry_id, msg.delivery, msg.id) for msg, _ in batch]
        try:
            refused = await self.call("ack", lambda: scripts.ack(runner.channel, runner.keys,
                                                                 settles))
        except RETRYABLE as exc:  # only at shutdown: otherwise call() retries these
            self.abandon([msg for msg, _ in batch], exc)
            return
        except Exception as exc:
            if len(batch) == 1 or self._refused(exc):
                self.abandon([msg for msg, _ in batch], exc)
                return
            # One bad message must not fail the settle of the others: ack them one by one.
            log.error("ack of %d messages of %s refused (%s: %s); acking one at a time",
                      len(batch), self.runner.queue.name, type(exc).__name__, exc)
            for item in batch:
                await self._ack_batch([item])
            return
        refused_at = {i - 1 for i in refused}
        for i, (msg, duration) in enumerate(batch):
            self.settled(msg, EventKind.ACKED if i not in refused_at else None,
                         duration=duration)

    # -- failures ----------------------------------------------------------------------

    async def fail(self, msg: Message, exc: BaseException, duration: float) -> None:
        """Settle a message whose handler failed (or asked for a retry, snooze, DLQ)."""
        self.runner.settling.add(f"{msg.lane}{msg.entry_id}")
        try:
            await self._settle_failure(msg, exc, duration)
        except RETRYABLE as error:
            self.abandon([msg], error)
        except Exception as error:
            if self._refused(error):
                self.abandon([msg], error)  # no settle can work; the worker's loops stop
            else:
                await self.dead_letter_unsettleable(msg, error)

    async def _settle_failure(self, msg: Message, exc: BaseException, duration: float) -> None:
        runner = self.runner
        decision = decide(msg, exc, runner.retry, runner.clock)
        client, keys = runner.channel, runner.keys
        if decision.action is Action.DEAD_LETTER:
            item = (msg.lane, msg.entry_id, msg.delivery, decision.reason, decision.error_json)
            refused = await self.call("dead_letter", lambda: scripts.dead_letter(
                client, keys, [item]))
            kind = EventKind.DEAD_LETTERED
        else:
            retry = decision.action is Action.RETRY
            kind = EventKind.RETRIED if retry else EventKind.SNOOZED
            attempts = msg.attempts + 1 if retry else msg.attempts
            envelope = encode(_with_attempts(msg, attempts), check=False)
            parked = (msg.lane, msg.entry_id, msg.delivery, msg.id, envelope,
                      msg.expires_at_ms, int(decision.delay * 1000))
            refused = await self.call("retry", lambda: scripts.retry(
                client, keys, kind.value, [parked]))
            msg.attempts = attempts
        self.settled(msg, None if refused else kind, duration=duration,
                     delay=decision.delay, reason=decision.reason,
                     error=f"{type(exc).__name__}: {exc}")

    async def dead_letter_unsettleable(self, msg: Message, error: BaseException) -> None:
        """Park a message whose settle failed for a reason retrying cannot cure."""
        log.error("could not settle message %s of %s (%s: %s); dead-lettering it as "
                  "settle_failed", msg.id, self.runner.queue.name, type(error).__name__, error)
        detail = orjson.dumps({"type": type(error).__qualname__, "message": str(error),
                               "attempts": msg.attempts + 1}).decode()
        runner = self.runner
        item = (msg.lane, msg.entry_id, msg.delivery, "settle_failed", detail)
        try:
            refused = await self.call("dead_letter", lambda: scripts.dead_letter(
                runner.channel, runner.keys, [item]))
        except Exception as exc:
            self.abandon([msg], exc)
            return
        self.settled(msg, None if refused else EventKind.DEAD_LETTERED,
                     reason="settle_failed", error=f"{type(error).__name__}: {error}")

    async def dead_letter_entry(self, lane: int, entry_id: str, token: int, msg_id: str,
                                reason: str, exc: Exception) -> None:
        """Park a stream entry that is not a message this worker can hand to a handler."""
        error = orjson.dumps({"type": type(exc).__name__, "message": str(exc),
                              "field": getattr(exc, "field", None)}).decode()
        runner = self.runner
        try:
            refused = await self.call("dead_letter", lambda: scripts.dead_letter(
                runner.channel, runner.keys, [(lane, entry_id, token, reason, error)]))
        except Exception as failure:
            log.error("could not dead-letter entry %s of %s (%s); it is redelivered when its "
                      "lease expires", entry_id, runner.queue.name, failure)
            return
        if refused:
            return
        log.error("entry %s in %s is not a valid tidings envelope (%s); dead-lettered as %s",
                  entry_id, runner.queue.name, exc, reason)
        runner.bus.event(EventKind.DEAD_LETTERED, runner.queue.name, msg_id, reason=reason,
                         error=str(exc))

    # -- shutdown ----------------------------------------------------------------------

    async def release_unfinished(self) -> int:
        """Hand back leased messages whose handler did not finish, for immediate redelivery."""
        runner = self.runner
        held = list(runner.in_flight.values())
        if not held:
            return 0
        items = [(msg.lane, msg.entry_id, msg.delivery, msg.id, encode(msg, check=False),
                  msg.expires_at_ms, 0) for msg in held]
        refused = {i - 1 for i in await self.call("retry", lambda: scripts.retry(
            runner.channel, runner.keys, EventKind.RELEASED.value, items))}
        for i, msg in enumerate(held):
            self.settled(msg, None if i in refused else EventKind.RELEASED)
        return len(held) - len(refused)

    # -- shared ------------------------------------------------------------------------

    def _refused(self, exc: BaseException) -> bool:
        """An ACL refusal: retrying or dead-lettering the message cannot help."""
        return refusal_of(exc, self.runner.queue.app.broker.user) is not None

    async def call(self, name: str, run: Callable[[], Awaitable[list[int]]]) -> list[int]:
        """Run a settle script (``run()``), retrying through connection trouble and a full
        server; ``name`` names it in the log."""
        runner = self.runner
        backoff = Backoff(runner.clock)
        while True:
            try:
                return await run()
            except RETRYABLE as exc:
                if runner.worker.abandon_settles:
                    raise
                await backoff.wait(f"{name} on {runner.queue.name}", exc)

    def settled(self, msg: Message, kind: EventKind | None, **extra: Any) -> None:
        """Forget a settled message; ``kind`` None: the server refused (lease lost)."""
        runner = self.runner
        key = f"{msg.lane}{msg.entry_id}"
        if kind is None:
            runner.lease_lost(key, msg, settled=True)
            return
        if runner.in_flight.get(key) is msg:
            del runner.in_flight[key]
            runner.settling.discard(key)
        if runner.bus.active:
            runner.bus.message_event(kind, msg, **extra)

    def abandon(self, messages: list[Message], exc: BaseException) -> None:
        """A settle failed for good: stop renewing the leases, so the messages are reclaimed
        and delivered again after the visibility timeout instead of hanging in flight."""
        runner = self.runner
        log.error("could not settle %d message(s) of %s (%s: %s); they will be redelivered "
                  "when their lease expires", len(messages), runner.queue.name,
                  type(exc).__name__, exc)
        for msg in messages:
            key = f"{msg.lane}{msg.entry_id}"
            if runner.in_flight.get(key) is msg:
                del runner.in_flight[key]
                runner.settling.discard(key)


def _with_attempts(msg: Message, attempts: int) -> Message:
    """``msg`` with another attempt count, for its next envelope (msg itself unchanged, so
    a settle that fails leaves the message as it was delivered)."""
    if attempts == msg.attempts:
        return msg
    return replace(msg, attempts=attempts)
