"""Ordered queues: messages with the same key run one at a time, in publish order.

::

    orders = OrderedQueue(app, "orders", partitions=16, on_failure="block")

    @orders.handler(concurrency=64)
    async def handle(msg: Message) -> None:
        await ledger.apply(msg.headers["ordering_key"], msg.payload)

    await orders.publish({"op": "debit", "amount": 5}, key="account-42")

A key (an account, a conversation) hashes to one of ``partitions`` partitions. Each
partition has one owner among the running workers at a time (a lease with an epoch that
fences a previous owner out) and keeps, per key, a list of its messages: only a key's head
ever runs, and only once the one before it was settled. Different keys run concurrently,
so one slow or failing key holds up nobody else. Partitions move between workers as they
join and leave (a leaving or handing-over worker finishes its running messages first);
a dead worker's partitions are taken over once its lease runs out, and what it had in
flight runs again first (at-least-once, order kept).

On failure a head is retried in place with the retry backoff while the key's later
messages wait (the key shows in :meth:`OrderedQueue.blocked_keys`). Once ``max_attempts``
is spent, ``on_failure="block"`` holds the key for an operator (:meth:`retry_key`,
:meth:`skip_key`); ``"dead_letter"`` moves the head to the dead-letter stream and the key
goes on. ``Snooze`` waits without spending an attempt; ``DeadLetter`` dead-letters at once.

Workers: handlers registered here run inside every ``tidings worker`` of the app (a worker
loop), or in an :class:`~tidings.OrderedWorker` of their own.
Redis layout, per partition ``i`` (one hash tag, one slot): see ``lua/includes/ordered.lua``;
queue-wide: ``<prefix>:{<name>#o}:members|wake|meta``.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..core.clock import now_ms
from ..core.config import DEFAULT_HANDLER_CONCURRENCY, Durability, RetryPolicy
from ..core.errors import ConfigError, PayloadError, ValidationError
from ..core.ids import new_message_id
from ..core.keys import PartitionKeys
from ..core.message import Message, check_attempts, encode, validate_headers
from ..core.stored import text
from ..queues.handlers import HandlerSpec
from . import scripts

if TYPE_CHECKING:
    from ..core.middleware import WorkerView
    from ..core.progress import ProgressCallback
    from ..queues.host import ExtensionHost
    from .admin import BlockedKey, OrderedStats

F = TypeVar("F", bound=Callable[..., Any])
OnFailure = Literal["block", "dead_letter"]
KEY_HEADER = "ordering_key"


class OrderedQueues:
    """The ordered queues declared on one app (an app extension), by name."""

    def __init__(self, app: ExtensionHost) -> None:
        self.declared: dict[str, OrderedQueue] = {}


def ordered_queues(app: Any) -> dict[str, OrderedQueue]:
    """The ordered queues declared on ``app``, by name."""
    registry: OrderedQueues = app.extension(OrderedQueues)
    return dict(registry.declared)


class OrderedQueue:
    """A partitioned queue with per-key ordering; see the module docstring."""

    def __init__(self, app: ExtensionHost, name: str, *, partitions: int = 16,
                 on_failure: OnFailure = "block", max_attempts: int = 5,
                 retry: RetryPolicy | None = None, lease: float = 10.0,
                 max_deliveries: int = 5, handler_timeout: float | None = None,
                 max_payload_bytes: int = 256 * 1024) -> None:
        if not 1 <= partitions <= 4096:
            raise ValidationError("partitions", "must be between 1 and 4096")
        if on_failure not in ("block", "dead_letter"):
            raise ValidationError("on_failure", "must be 'block' or 'dead_letter'")
        if max_attempts < 1 or max_deliveries < 0 or not lease > 0:
            raise ValidationError("max_attempts", "max_attempts >= 1, max_deliveries >= 0, "
                                  "lease > 0")
        if any(c in name for c in "{}#") or not name:
            raise ValidationError("name", "must be non-empty without '{', '}' or '#'")
        self.app, self.name, self.partitions = app, name, partitions
        self.on_failure: OnFailure = on_failure
        self.max_attempts, self.lease = max_attempts, lease
        self.retry = (retry or RetryPolicy()).model_copy(update={"max_attempts": max_attempts})
        self.max_deliveries, self.handler_timeout = max_deliveries, handler_timeout
        self.max_payload_bytes = max_payload_bytes
        self.parts = [app.key_space.partition(name, i) for i in range(partitions)]
        self.keys = app.key_space.ordered(name)
        self.members_key, self.wake_key, self.meta_key = (
            self.keys.members, self.keys.wake, self.keys.meta)
        self.handler_spec: HandlerSpec | None = None
        self._checked = False
        app.extension(OrderedQueues).declared[name] = self

    def __repr__(self) -> str:
        return f"<OrderedQueue {self.name} ({self.partitions} partitions)>"

    def partition_of(self, key: str) -> PartitionKeys:
        """CRC-32, not ``hash()``: every process must map a key to the same partition."""
        return self.parts[self.index_of(key)]

    def index_of(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.partitions

    def handler(self, fn: F | None = None, *,
                concurrency: int = DEFAULT_HANDLER_CONCURRENCY) -> Any:
        """Register the handler (a ``Message`` -> None function, async or sync).

        It runs inside every ``tidings worker`` of the app (as a middleware worker loop)::

            @orders.handler(concurrency=64)
            async def handle(msg: Message) -> None: ...
        """
        def register(func: F) -> F:
            first = self.handler_spec is None
            self.handler_spec = HandlerSpec.build(func, concurrency, None, 0)
            if first:
                self.app.add_worker_service(self._serve)
            return func

        return register(fn) if fn is not None else register

    async def _serve(self, worker: WorkerView) -> None:
        from .runner import OrderedRunner, log

        try:
            grace = float(getattr(worker, "shutdown_grace", 25.0))
            await OrderedRunner(self, worker.consumer, shutdown_grace=grace).run(worker.stopped)
        except Exception:
            log.exception("ordered queue %s stopped working", self.name)
            raise

    # -- publishing --------------------------------------------------------------------

    async def publish(self, payload: Any, *, key: str, headers: dict[str, str] | None = None,
                      correlation_id: str | None = None, max_attempts: int | None = None) -> str:
        """Publish one message after every earlier message of ``key``; returns its id.

        ``max_attempts`` overrides the queue's for this message.
        """
        if correlation_id is not None:
            if not isinstance(correlation_id, str) or not correlation_id:
                raise ValidationError("correlation_id", "must be a non-empty string, got "
                                      f"{correlation_id!r}")
            headers = {**validate_headers(headers), "correlation_id": correlation_id}
        return (await self.publish_many([(key, payload)], headers=headers,
                                        max_attempts=max_attempts))[0]

    async def publish_many(self, items: Iterable[tuple[str, Any]], *,
                           headers: dict[str, str] | None = None,
                           max_attempts: int | None = None) -> list[str]:
        """Publish ``(key, payload)`` pairs, in order per key; one round trip in all."""
        items = list(items)
        if not items:
            return []
        base = validate_headers(headers)
        if max_attempts is not None:
            check_attempts(max_attempts)
        await self.ensure_ready()
        created = now_ms(self.app.clock)
        chain = self.app.middleware
        ids: list[str] = []
        batches: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
        for key, payload in items:
            if not isinstance(key, str) or not 0 < len(key) <= 512:
                raise ValidationError("key", "must be a non-empty string of <= 512 chars")
            msg_id = new_message_id(created)
            message = Message(msg_id, self.name, payload, {**base, KEY_HEADER: key},
                              created_at_ms=created, max_attempts=max_attempts)
            if chain.publishing:
                chain.before_publish(self.name, message)
            raw = encode(message)
            if len(raw) > self.max_payload_bytes:
                raise PayloadError("payload", f"encoded message is {len(raw)} bytes; ordered "
                                   f"queue {self.name!r} allows {self.max_payload_bytes}")
            batches[self.index_of(key)].append((key, msg_id.encode() + b"|" + raw))
            ids.append(msg_id)
        # The wake entry rides in the same round trip, behind the scripts it announces.
        await self.app.broker.publish_pipelined(
            self.name, [scripts.publish(self.parts[p], batch) for p, batch in batches.items()],
            Durability.MEMORY, 1.0, ids, after=[("XADD", self.wake_key, "MAXLEN", "1", "*",
                                                 "w", "1")])
        return ids

    async def ensure_ready(self) -> None:
        """Connect, load the scripts, and refuse a partition count other workers disagree on
        (a different count maps keys to other partitions and would break their order)."""
        if self._checked and self.app.broker.connected:
            return
        if not self.app.broker.connected:
            await self.app.connect()
        client = self.app.broker.client
        await client.hsetnx(self.meta_key, "partitions", self.partitions)
        stored = int(await client.hget(self.meta_key, "partitions"))
        if stored != self.partitions:
            raise ConfigError("partitions", f"ordered queue {self.name!r} has {stored} "
                              f"partitions in Redis; this app says {self.partitions}")
        self._checked = True

    # -- operators (ordering/admin.py) ---------------------------------------------------

    async def blocked_keys(self) -> list[BlockedKey]:
        """Keys whose head failed and is retrying, or is held for an operator."""
        from .admin import blocked_keys

        return await blocked_keys(self)

    async def retry_key(self, key: str) -> bool:
        """Run a blocked key's head again now, with fresh attempts."""
        from .admin import unblock

        return await unblock(self, key, "retry")

    async def skip_key(self, key: str, reason: str = "skipped by operator") -> bool:
        """Dead-letter a blocked key's head; the key goes on with its next message."""
        from .admin import unblock

        return await unblock(self, key, "skip", reason)

    async def pending(self, key: str) -> int:
        """Messages of ``key`` not yet settled (its head included)."""
        await self.ensure_ready()
        return int(await self.app.broker.client.llen(self.partition_of(key).list_key(key)))

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Dead-lettered messages of every partition: key, message, reason, error.

        An entry that cannot be read whole still shows, with what could be read
        (``message`` None and ``decode_error`` saying why).
        """
        from .admin import dead_letters

        return await dead_letters(self, limit)

    async def replay_dead_letters(self, key: str | None = None, *,
                                  progress: ProgressCallback | None = None) -> int:
        """Put dead-lettered messages (of every key, or of ``key``) back, attempts reset.

        Each goes to the end of its key's line: after the key's messages published since
        it was dead-lettered (those could not wait for it). Returns how many were replayed.
        ``progress(done, None)`` is called after each batch.
        """
        from .admin import dead_letter_action

        return await dead_letter_action(self, "replay", key, progress)

    async def purge_dead_letters(self, key: str | None = None, *,
                                 progress: ProgressCallback | None = None) -> int:
        """Delete dead-lettered messages (of every key, or of ``key``); returns how many."""
        from .admin import dead_letter_action

        return await dead_letter_action(self, "purge", key, progress)

    async def stats(self) -> OrderedStats:
        from .admin import stats

        return await stats(self)


async def stored_ordered_names(app: Any) -> set[str]:
    """Ordered queues the app declares or the server has (reads only)."""
    prefix = app.settings.key_prefix
    found = set(ordered_queues(app))
    async for key in app.broker.client.scan_iter(match=f"{prefix}:{{*#o}}:meta", count=1000):
        found.add(text(key)[len(prefix) + 2:-len("#o}:meta")])
    return found
