"""A queue: publishing, delayed-message control and inspection.

Redis layout of queue ``email`` under prefix ``tidings`` (one hash tag, one cluster slot)::

    tidings:{email}:high|normal|low   lane streams, consumer group "tidings"
    tidings:{email}:delayed           zset msg id -> due ms (server clock)
    tidings:{email}:delayed-bodies    hash msg id -> lane|expires|envelope
    tidings:{email}:dlq               dead-letter stream
    tidings:{email}:deliveries        hash lane+entry id -> delivery count (the lease token)
    tidings:{email}:index             hash msg id -> where the message is now
    tidings:{email}:idem:<key>        idempotency key -> first msg id (expires)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..core.config import QueueConfig
from ..core.errors import PayloadError, ValidationError
from ..core.message import (
    Message,
    Priority,
    check_attempts,
    decode,
    duration_ms,
    encode,
    from_ms,
    new_message_id,
    now_ms,
    to_ms,
    validate_headers,
)
from ..engine.scripts import SCRIPTS
from .dead_letters import DeadLetters

if TYPE_CHECKING:
    from ..app import Tidings
    from .handlers import FetchGate, HandlerSpec

GROUP = "tidings"
LANE_NAMES = ("high", "normal", "low")
F = TypeVar("F", bound=Callable[..., Any])


def _check_message_id(message_id: Any) -> None:
    if not isinstance(message_id, str) or not message_id:
        raise ValidationError("message_id", f"must be a non-empty string, got {message_id!r}")


def queue_keys(prefix: str, name: str) -> list[str]:
    """The twelve keys every queue script receives, in the order the scripts expect."""
    tag = f"{prefix}:{{{name}}}"
    return [f"{tag}:{suffix}" for suffix in (
        "high", "normal", "low", "delayed", "delayed-bodies", "dlq", "deliveries", "index",
        "stats", "wake", "consumers", "config")]


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
class QueueStats:
    """A snapshot of one queue, as ``tidings queues`` shows it."""

    name: str
    lanes: dict[str, int]  # undelivered entries per lane
    in_flight: int
    delayed: int
    dead: int
    oldest_age: float | None  # seconds since the oldest undelivered message was enqueued
    consumers: int
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return sum(self.lanes.values())


@dataclass(slots=True)
class MessageInfo:
    """Where a message is and what it holds, for ``tidings inspect``."""

    id: str
    state: str  # queued | in_flight | delayed | dead
    message: Message | None
    lane: str | None = None
    due_at: datetime | None = None
    deliveries: int = 0
    dead_letter: dict[str, Any] | None = None


class Queue:
    """A named queue with three priority lanes, a delayed set and a dead-letter queue.

    Create it with :meth:`Tidings.queue`; publish with :meth:`publish` / :meth:`publish_many`,
    register the consumer with :meth:`handler`.
    """

    def __init__(self, app: Tidings, config: QueueConfig) -> None:
        self.app = app
        self.config = config
        self.name = config.name
        self.keys = queue_keys(app.settings.key_prefix, config.name)
        self._idem_prefix = f"{app.settings.key_prefix}:{{{config.name}}}:idem:"
        self.handler_spec: HandlerSpec | None = None
        self.gates: list[FetchGate] = []  # flow control consulted before each fetch
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
        concurrency: int = 32,
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
        from .handlers import HandlerSpec

        def register(func: F) -> F:
            self.handler_spec = HandlerSpec.build(func, concurrency, batch_size, batch_wait)
            return func

        return register(fn) if fn is not None else register

    # -- publishing --------------------------------------------------------------------

    def _prepare(self, item: Outgoing, created: int, args: list[Any], keys: list[str]) -> str:
        """Validate one message and append its script arguments; returns its id."""
        priority = Priority.parse(item.priority)
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
        if item.max_attempts is not None:
            check_attempts(item.max_attempts)
        key = item.idempotency_key
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 512):
            raise ValidationError("idempotency_key", "must be a non-empty string of <= 512 chars")
        not_before = due_at if due_at is not None else (
            created + delay if delay is not None else None)
        msg_id = new_message_id()
        raw = encode(Message(
            msg_id, self.name, item.payload, validate_headers(item.headers), priority, key, 0,
            created, not_before, expires, item.max_attempts,
        ))
        if len(raw) > self.config.max_payload_bytes:
            raise PayloadError("payload", f"encoded message is {len(raw)} bytes; queue "
                               f"{self.name!r} allows {self.config.max_payload_bytes}")
        idem_index = 0
        if key is not None:
            keys.append(self._idem_prefix + key)
            idem_index = len(keys)
        args += (msg_id, int(priority), raw, "" if expires is None else expires,
                 "" if due_at is None else due_at, "" if delay is None else delay, idem_index)
        return msg_id

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
            if not isinstance(correlation_id, str) or not correlation_id:
                raise ValidationError("correlation_id", "must be a non-empty string, got "
                                      f"{correlation_id!r}")
            headers = {**validate_headers(headers), "correlation_id": correlation_id}
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
        ids: list[str] = []
        chunk: list[Outgoing] = []
        for item in items:
            chunk.append(item if isinstance(item, Outgoing) else Outgoing(item))
            if len(chunk) >= chunk_size:
                ids += await self._publish(chunk)
                chunk = []
        if chunk:
            ids += await self._publish(chunk)
        return ids

    async def _publish(self, items: Sequence[Outgoing]) -> list[str]:
        if not self.app.broker.connected:
            await self.app.connect()
        created = now_ms()
        keys = list(self.keys)
        args: list[Any] = [int(self.config.dedupe_window * 1000)]
        for item in items:
            self._prepare(item, created, args, keys)
        result = await self.app.broker.publish(self, keys, args)
        ids = [r[0].decode() if isinstance(r[0], bytes) else r[0] for r in result]
        bus = self.app.events
        if bus.active:
            for msg_id, (_, new), item in zip(ids, result, items, strict=True):
                if new:
                    bus.emit_published(self.name, msg_id, Priority.parse(item.priority),
                                       item.headers)
        return ids

    # -- delayed messages --------------------------------------------------------------

    async def cancel(self, message_id: str) -> bool:
        """Cancel a message waiting in the delayed set; False if it is not waiting there."""
        _check_message_id(message_id)
        return bool(await self.app.broker.call(SCRIPTS.cancel_delayed, self.keys, [message_id]))

    async def reschedule(
        self, message_id: str, *, delay: timedelta | float | None = None,
        send_at: datetime | None = None,
    ) -> datetime:
        """Move a delayed message to a new due time; raises MessageNotFoundError if absent."""
        from ..core.errors import MessageNotFoundError

        _check_message_id(message_id)
        if (delay is None) == (send_at is None):
            raise ValidationError("delay", "give exactly one of delay or send_at")
        args = ["" if send_at is None else to_ms(send_at, "send_at"),
                "" if delay is None else duration_ms(delay, "delay")]
        due = await self.app.broker.call(SCRIPTS.reschedule_delayed, self.keys,
                                         [message_id, *args])
        if due < 0:
            raise MessageNotFoundError(f"{message_id} is not waiting in {self.name}'s delayed set")
        result = from_ms(due)
        assert result is not None
        return result

    # -- operations --------------------------------------------------------------------

    async def set_weights(self, high: int, normal: int, low: int) -> None:
        """Change the lane weights of every running worker (applied within a heartbeat)."""
        from ..core.config import build_queue_config

        build_queue_config(self.name, weights=(high, normal, low))  # validates
        await self.app.broker.client.hset(self.keys[11], "weights", f"{high},{normal},{low}")

    async def stats(self) -> QueueStats:
        return await self.app.broker.queue_stats(self)

    async def inspect(self, message_id: str) -> MessageInfo | None:
        return await self.app.broker.inspect(self, message_id)

    def decode(self, raw: bytes) -> Message:
        return decode(raw)

    async def delete(self, *, force: bool = False,
                     progress: Callable[[int, int | None], None] | None = None) -> int:
        """Delete this queue and everything it holds; returns how many keys went.

        Refuses with :class:`~tidings.errors.QueueNotEmptyError` while it holds messages
        (queued, in flight, delayed, dead) or workers consume it, unless ``force``. Stop
        its producers first: a publish after the deletion creates the queue again.
        ``progress(done, total)`` is called as keys are deleted.
        """
        from .admin import delete_queue

        return await delete_queue(self, force=force, progress=progress)
