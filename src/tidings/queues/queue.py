"""A queue: publishing, delayed-message control and inspection.

Its Redis keys (one hash tag, one cluster slot) are named in :class:`tidings.core.keys.
QueueKeys`; the scripts that change them in :mod:`tidings.queues.scripts`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..core.clock import now_ms
from ..core.config import (
    DEFAULT_HANDLER_CONCURRENCY,
    RETRY_FIELD,
    QueueConfig,
    RetryPolicy,
    build_queue_config,
    retry_with,
)
from ..core.errors import MessageNotFoundError, PayloadError, QueueFullError, ValidationError
from ..core.ids import new_message_id
from ..core.message import (
    Message,
    Priority,
    check_attempts,
    decode,
    duration_ms,
    encode,
    from_ms,
    to_ms,
    validate_headers,
)
from ..core.progress import ProgressCallback
from ..engine.memory import RETRY_AFTER_FULL
from . import scripts
from .dead_letters import DeadLetters
from .handlers import HandlerSpec

if TYPE_CHECKING:
    from .host import QueueHost
    from .inspection import MessageInfo
    from .stats import QueueStats

F = TypeVar("F", bound=Callable[..., Any])


def _check_message_id(message_id: Any) -> None:
    if not isinstance(message_id, str) or not message_id:
        raise ValidationError("message_id", f"must be a non-empty string, got {message_id!r}")


def with_correlation(headers: dict[str, str] | None, correlation_id: Any) -> dict[str, str]:
    """``headers`` with the ``correlation_id`` header (validated, as ``publish`` takes it)."""
    if not isinstance(correlation_id, str) or not correlation_id:
        raise ValidationError("correlation_id", f"must be a non-empty string, got "
                              f"{correlation_id!r}")
    return {**validate_headers(headers), "correlation_id": correlation_id}


@dataclass(slots=True)
class Outgoing:
    """One message for :meth:`Queue.publish_many`, with the same options as ``publish``."""

    payload: Any
    priority: Priority | str = Priority.NORMAL
    idempotency_key: str | None = None
    headers: dict[str, str] | None = None
    delay: timedelta | float | None = None
    send_at: datetime | None = None
    expires_in: timedelta | float | None = None
    expires_at: datetime | None = None
    max_attempts: int | None = None


@dataclass(slots=True)
class Published:
    """The outcome of one message of :meth:`Queue.publish_each`: its ``id`` (None when
    refused), whether it was an idempotent ``duplicate``, or the ``error`` that refused it."""

    id: str | None
    duplicate: bool = False
    error: ValidationError | None = None


class Queue:
    """A named queue with three priority lanes, a delayed set and a dead-letter queue.

    Create it with :meth:`Tidings.queue`; publish with :meth:`publish` / :meth:`publish_many`,
    register the consumer with :meth:`handler`.
    """

    def __init__(self, app: QueueHost, config: QueueConfig) -> None:
        self.app = app
        self.config = config
        self.name = config.name
        self.keys = app.key_space.queue(config.name)
        self.handler_spec: HandlerSpec | None = None
        self.dlq = DeadLetters(self)

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    # -- consuming ---------------------------------------------------------------------

    @overload
    def handler(self, fn: F) -> F: ...

    @overload
    def handler(
        self, *, concurrency: int = ..., batch_size: int | None = ...,
        batch_wait: timedelta | float = ...,
    ) -> Callable[[F], F]: ...

    def handler(
        self,
        fn: F | None = None,
        *,
        concurrency: int = DEFAULT_HANDLER_CONCURRENCY,
        batch_size: int | None = None,
        batch_wait: timedelta | float = 0.05,
    ) -> F | Callable[[F], F]:
        """Register the function that processes this queue's messages.

        The function takes a :class:`Message` (or, with ``batch_size``, a ``list[Message]``
        of up to that many, gathered for at most ``batch_wait``). It may be async or sync
        (sync ones run in a thread pool). Return normally to ack; raise ``Retry``,
        ``Snooze`` or ``DeadLetter`` to choose the outcome; any other exception goes
        through the retry policy. In a batch, ``msg.retry()`` / ``msg.dead_letter()`` /
        ``msg.fail(exc)`` settle single messages::

            @email.handler(concurrency=64)
            async def send(msg: Message) -> None:
                await smtp.send(**msg.payload)
        """
        def register(func: F) -> F:
            self.handler_spec = HandlerSpec.build(func, concurrency, batch_size, batch_wait)
            return func

        return register(fn) if fn is not None else register

    # -- publishing --------------------------------------------------------------------

    def _prepare(self, item: Outgoing, created: int, batch: scripts.PublishBatch) -> str:
        """Validate one message and add it to ``batch``; returns its id."""
        priority = item.priority
        if type(priority) is not Priority:
            priority = Priority.parse(priority)
        expires = due_at = delay = not_before = None
        if (item.delay is not None or item.send_at is not None or item.expires_in is not None
                or item.expires_at is not None):
            expires, due_at, delay, not_before = self._times(item, created)
        elif self.config.default_ttl is not None:
            expires = created + int(self.config.default_ttl * 1000)
        if item.max_attempts is not None:
            check_attempts(item.max_attempts)
        key = item.idempotency_key
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 512):
            raise ValidationError("idempotency_key", "must be a non-empty string of <= 512 chars")
        msg_id = new_message_id(created)
        headers = item.headers
        message = Message(msg_id, self.name, item.payload,
                          {} if headers is None else validate_headers(headers), priority, key,
                          0, created, not_before, expires, item.max_attempts)
        chain = self.app.middleware
        if chain.publishing:
            chain.before_publish(self.name, message)
        raw = encode(message)
        if len(raw) > self.config.max_payload_bytes:
            raise PayloadError("payload", f"encoded message is {len(raw)} bytes; queue "
                               f"{self.name!r} allows {self.config.max_payload_bytes}")
        batch.add(msg_id, int(priority), raw, expires, due_at, delay,
                  None if key is None else self.keys.idempotency(key))
        return msg_id

    def _times(self, item: Outgoing, created: int
               ) -> tuple[int | None, int | None, int | None, int | None]:
        """(expires, due at, delay, not before) in ms, from the message's time options."""
        if item.delay is not None and item.send_at is not None:
            raise ValidationError("delay", "give either delay or send_at, not both")
        if item.expires_in is not None and item.expires_at is not None:
            raise ValidationError("expires_in", "give either expires_in or expires_at, not both")
        expires: int | None = None
        if item.expires_at is not None:
            expires = to_ms(item.expires_at, "expires_at")
        elif item.expires_in is not None:
            expires = created + duration_ms(item.expires_in, "expires_in")
        elif self.config.default_ttl is not None:
            expires = created + int(self.config.default_ttl * 1000)
        due_at = None if item.send_at is None else to_ms(item.send_at, "send_at")
        delay = None if item.delay is None else duration_ms(item.delay, "delay")
        not_before = due_at if due_at is not None else (
            created + delay if delay is not None else None)
        return expires, due_at, delay, not_before

    async def publish(
        self,
        payload: Any,
        *,
        priority: Priority | str = Priority.NORMAL,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        delay: timedelta | float | None = None,
        send_at: datetime | None = None,
        expires_in: timedelta | float | None = None,
        expires_at: datetime | None = None,
        max_attempts: int | None = None,
    ) -> str:
        """Publish one message; returns its id (the first one's id for a duplicate).

        ``delay`` counts on the server's clock; ``send_at``/``expires_at`` must be
        timezone-aware. ``idempotency_key``: a second publish with the same key within
        the queue's dedupe window enqueues nothing.
        """
        if correlation_id is not None:
            headers = with_correlation(headers, correlation_id)
        item = Outgoing(payload, priority, idempotency_key, headers, delay, send_at, expires_in,
                        expires_at, max_attempts)
        return (await self._publish([item]))[0]

    async def publish_many(
        self, items: Iterable[Outgoing | Any], *, chunk_size: int = 1000
    ) -> list[str]:
        """Publish many messages, one round trip per chunk; returns ids in input order.

        Items are :class:`Outgoing` or bare payloads (normal priority, queue defaults).
        Each chunk is atomic; if a later chunk fails, earlier chunks stay published, so
        use idempotency keys to make a re-run safe.
        """
        if type(chunk_size) is not int or not 1 <= chunk_size <= 10_000:
            raise ValidationError("chunk_size", f"must be an int from 1 to 10000, got "
                                  f"{chunk_size!r}")
        app = self.app
        if not app.broker.connected:
            await app.connect()
        if app.middleware.wraps_publish:  # the wrapper spans preparing and sending a chunk
            ids: list[str] = []
            for chunk in _chunks(items, chunk_size):
                ids += await self._publish(chunk)
            return ids
        return await self._publish_overlapped(_chunks(items, chunk_size))

    async def _publish_overlapped(self, chunks: Iterable[list[Outgoing]]) -> list[str]:
        """Encode each chunk while the one before is on the server (2 cores: both busy).

        A chunk is sent only once the one before it succeeded, as when they go one by one:
        a refusal or an error stops the later chunks, and the earlier ones stay published.
        """
        ids: list[str] = []
        in_flight: asyncio.Future[list[str]] | None = None
        try:
            for chunk in chunks:
                batch = self._prepare_all(chunk)
                if in_flight is not None:
                    ids += await in_flight
                in_flight = asyncio.ensure_future(self._send_batch(chunk, batch))
                await asyncio.sleep(0)  # it writes on its first step; then we encode the next
            if in_flight is not None:
                ids += await in_flight
                in_flight = None
        finally:
            if in_flight is not None and not in_flight.done():
                # Encoding the next chunk raised (a bad item): the chunk on the wire lands,
                # as it would have one by one, before the error propagates.
                await asyncio.gather(in_flight, return_exceptions=True)
        return ids

    async def _publish(self, items: Sequence[Outgoing]) -> list[str]:
        app = self.app
        if not app.broker.connected:
            await app.connect()
        chain = app.middleware
        if chain.wraps_publish:
            result: list[str] = await chain.call_publish(self.name, len(items),
                                                         lambda: self._send(items))
            return result
        return await self._send(items)

    async def _send(self, items: Sequence[Outgoing]) -> list[str]:
        """Prepare ``items`` (each passes the middleware's ``before_publish``) and publish
        them in one round trip."""
        return await self._send_batch(items, self._prepare_all(items))

    def _prepare_all(self, items: Sequence[Outgoing]) -> scripts.PublishBatch:
        config = self.config
        created = now_ms(self.app.clock)
        batch = scripts.PublishBatch(self.keys, int(config.dedupe_window * 1000),
                                     config.depth_limits())
        for item in items:
            self._prepare(item, created, batch)
        return batch

    async def _send_batch(self, items: Sequence[Outgoing],
                          batch: scripts.PublishBatch) -> list[str]:
        return [msg_id for msg_id, _ in await self._send_flagged(items, batch)]

    async def _send_flagged(self, items: Sequence[Outgoing],
                            batch: scripts.PublishBatch) -> list[tuple[str, bool]]:
        """Send ``batch``: (id, stored) per message, False for an idempotent duplicate."""
        app = self.app
        config = self.config
        result = await app.broker.publish(self.name, batch.call(), config.durability,
                                          config.durability_timeout)
        depth = scripts.refused_depth(result)
        if depth is not None:
            raise QueueFullError(self.name, "max_depth", RETRY_AFTER_FULL, depth=depth,
                                 limit=config.max_depth)
        flagged = [(r[0].decode() if isinstance(r[0], bytes) else r[0], bool(r[1]))
                   for r in result]
        chain = app.middleware
        if chain.active:
            for (msg_id, new), item in zip(flagged, items, strict=True):
                if new:
                    chain.emit_published(self.name, msg_id, Priority.parse(item.priority),
                                         item.headers)
        return flagged

    async def publish_each(self, items: Sequence[Outgoing]) -> list[Published]:
        """Publish ``items`` in one round trip, each judged on its own: one outcome per
        item, in order. A message that fails validation gets its error and the others
        are still published; ``duplicate`` marks a message whose idempotency key was
        seen within the dedupe window (its ``id`` is the first message's). A refusal of
        the whole batch (QueueFullError, an unreachable server) raises."""
        app = self.app
        if not app.broker.connected:
            await app.connect()
        chain = app.middleware
        if chain.wraps_publish:
            found: list[Published] = await chain.call_publish(
                self.name, len(items), lambda: self._each(items))
            return found
        return await self._each(items)

    async def _each(self, items: Sequence[Outgoing]) -> list[Published]:
        batch = scripts.PublishBatch(self.keys, int(self.config.dedupe_window * 1000),
                                     self.config.depth_limits())
        created = now_ms(self.app.clock)
        outcomes: list[Published] = []
        kept: list[tuple[int, Outgoing]] = []
        for item in items:
            try:
                self._prepare(item, created, batch)
            except ValidationError as exc:
                outcomes.append(Published(None, error=exc))
                continue
            kept.append((len(outcomes), item))
            outcomes.append(Published(None))
        if kept:
            flagged = await self._send_flagged([item for _, item in kept], batch)
            for (index, _), (msg_id, new) in zip(kept, flagged, strict=True):
                outcomes[index] = Published(msg_id, duplicate=not new)
        return outcomes

    # -- delayed messages --------------------------------------------------------------

    async def cancel(self, message_id: str) -> bool:
        """Cancel a message waiting in the delayed set; False if it is not waiting there."""
        _check_message_id(message_id)
        return bool(await self.app.broker.run(scripts.cancel_delayed(self.keys, message_id)))

    async def reschedule(
        self, message_id: str, *, delay: timedelta | float | None = None,
        send_at: datetime | None = None,
    ) -> datetime:
        """Move a delayed message to a new due time; raises MessageNotFoundError if absent."""
        _check_message_id(message_id)
        if (delay is None) == (send_at is None):
            raise ValidationError("delay", "give exactly one of delay or send_at")
        due = await self.app.broker.run(scripts.reschedule_delayed(
            self.keys, message_id,
            due_at_ms=None if send_at is None else to_ms(send_at, "send_at"),
            delay_ms=None if delay is None else duration_ms(delay, "delay")))
        if due < 0:
            raise MessageNotFoundError(f"{message_id} is not waiting in {self.name}'s delayed set")
        result = from_ms(due)
        assert result is not None
        return result

    # -- operations --------------------------------------------------------------------

    async def set_weights(self, high: int, normal: int, low: int) -> None:
        """Change the lane weights of every running worker (applied within a heartbeat)."""
        build_queue_config(self.name, weights=(high, normal, low))  # validates
        await self.app.broker.client.hset(self.keys.config, "weights", f"{high},{normal},{low}")

    async def set_retry(self, **policy: Any) -> RetryPolicy:
        """Change the retry policy of every running worker of this queue, without a restart.

        ``policy``: fields of :class:`RetryPolicy` (``max_attempts``, ``base``, ``factor``,
        ``cap``, ``jitter``) over the policy the code declares; no field restores that.
        Workers apply it within one heartbeat (``min(10 s, visibility_timeout / 3)``), to
        failures they settle from then on. Returns the policy that now applies.
        """
        merged = retry_with(self.config.retry, policy)  # validates: ValidationError
        client = self.app.broker.client
        if policy:
            await client.hset(self.keys.config, RETRY_FIELD, json.dumps(policy))
        else:
            await client.hdel(self.keys.config, RETRY_FIELD)
        return merged

    async def stats(self) -> QueueStats:
        from .stats import read_stats

        return await read_stats(self)

    async def inspect(self, message_id: str) -> MessageInfo | None:
        """Where ``message_id`` is and what it holds; None if the queue does not know it.

        Never raises on malformed stored data: what cannot be read is reported in the
        result (``fields`` as text, ``decode_error``), with ``state`` "unknown" when even
        the location is unreadable.
        """
        from .inspection import inspect_message

        return await self.app.broker.retrying(inspect_message, self, message_id)

    def decode(self, raw: bytes) -> Message:
        return decode(raw)

    async def delete(self, *, force: bool = False,
                     progress: ProgressCallback | None = None) -> int:
        """Delete this queue and everything it holds; returns how many keys went.

        Refuses with :class:`~tidings.errors.QueueNotEmptyError` while it holds messages
        (queued, in flight, delayed, dead) or workers consume it, unless ``force``. Stop
        its producers first: a publish after the deletion creates the queue again.
        ``progress(done, total)`` is called as keys are deleted.
        """
        from .admin import delete_queue

        return await delete_queue(self, force=force, progress=progress)


def _chunks(items: Iterable[Outgoing | Any], size: int) -> Iterable[list[Outgoing]]:
    chunk: list[Outgoing] = []
    for item in items:
        chunk.append(item if isinstance(item, Outgoing) else Outgoing(item))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
