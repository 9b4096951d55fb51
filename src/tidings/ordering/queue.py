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
service), or in an :class:`~tidings.ordering_runner.OrderedWorker` of their own.
Redis layout, per partition ``i`` (one hash tag, one slot): see ``lua/includes/ordered.lua``;
queue-wide: ``<prefix>:{<name>#o}:members|wake|meta``.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from weakref import WeakKeyDictionary

import orjson
from redis.exceptions import NoScriptError

from ..core.config import RetryPolicy
from ..core.errors import ConfigError, ValidationError
from ..core.message import Message, decode, encode, new_message_id, now_ms
from ..engine.broker import text
from ..engine.scripts import Script

if TYPE_CHECKING:
    from ..app import Tidings
    from ..core.progress import ProgressCallback
    from ..worker import Worker

F = TypeVar("F", bound=Callable[..., Any])
_DECLARED: WeakKeyDictionary[Tidings, dict[str, OrderedQueue]] = WeakKeyDictionary()
OnFailure = Literal["block", "dead_letter"]
KEY_HEADER = "ordering_key"


def meta_key(prefix: str, name: str) -> str:
    """Hash of an ordered queue's fixed settings (its partition count)."""
    return f"{prefix}:{{{name}#o}}:meta"


def ordered_queues(app: Tidings) -> dict[str, OrderedQueue]:
    """The ordered queues declared on ``app``, by name."""
    return dict(_DECLARED.get(app, {}))


class OrderedScripts:
    def __init__(self) -> None:
        for name in ("publish", "take", "ack", "fail", "claim", "release", "members",
                     "unblock", "replay"):
            setattr(self, name, Script(f"ordered_{name}"))

    publish: Script
    take: Script
    ack: Script
    fail: Script
    claim: Script
    release: Script
    members: Script
    unblock: Script
    replay: Script

    def all(self) -> list[Script]:
        return [s for s in vars(self).values() if isinstance(s, Script)]


SCRIPTS = OrderedScripts()
ScriptCall = tuple[Script, list[str], list[Any]]


async def run_scripts(client: Any, calls: list[ScriptCall]) -> list[Any]:
    """Run scripts in one round trip (a pipeline), loading them if the server lost them."""
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        pipe = client.pipeline(transaction=False)
        for i in todo:
            script, keys, args = calls[i]
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        missing = []
        for i, reply in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, NoScriptError) and attempt == 0:
                missing.append(i)  # it did not run: safe to run again
            elif isinstance(reply, Exception):
                raise reply
            else:
                results[i] = reply
        if not missing:
            break
        for script in SCRIPTS.all():  # the server restarted or flushed its scripts
            await client.execute_command("SCRIPT", "LOAD", script.source)
        todo = missing
    return results


class Partition:
    """The Redis keys of one partition, all under the hash tag ``{name#i}``."""

    __slots__ = ("index", "keys", "list_prefix")

    def __init__(self, prefix: str, name: str, index: int) -> None:
        tag = f"{prefix}:{{{name}#{index}}}"
        self.index = index
        self.keys = [f"{tag}:{s}" for s in ("owner", "ready", "active", "waiting", "blocked",
                                            "deliveries", "dlq", "stats")]
        self.list_prefix = f"{tag}:k:"

    def list_key(self, key: str) -> str:
        return self.list_prefix + key


@dataclass(slots=True, frozen=True)
class OrderedSpec:
    fn: Callable[..., Any]
    is_async: bool
    concurrency: int


@dataclass(slots=True)
class BlockedKey:
    """A key whose head failed: ``state`` is ``retrying`` (it will run again at
    ``next_at``) or ``blocked`` (held until an operator retries or skips it)."""

    key: str
    partition: int
    state: str
    message_id: str
    attempts: int
    error: str
    next_at: float | None = None
    waiting: int = 0  # messages of the key behind the head


@dataclass(slots=True)
class OrderedStats:
    name: str
    partitions: int
    owners: dict[int, str]  # partition -> worker holding its lease ('' when none)
    ready: int  # keys waiting for a worker
    active: int  # keys with a message running
    waiting: int  # keys waiting out a retry or snooze
    blocked: int
    dead: int
    counters: dict[str, int] = field(default_factory=dict)


class OrderedQueue:
    """A partitioned queue with per-key ordering; see the module docstring."""

    def __init__(self, app: Tidings, name: str, *, partitions: int = 16,
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
        prefix = app.settings.key_prefix
        self.parts = [Partition(prefix, name, i) for i in range(partitions)]
        tag = f"{prefix}:{{{name}#o}}"
        self.members_key, self.wake_key = f"{tag}:members", f"{tag}:wake"
        self.meta_key = meta_key(prefix, name)
        self.handler_spec: OrderedSpec | None = None
        self._checked = False
        _DECLARED.setdefault(app, {})[name] = self

    def __repr__(self) -> str:
        return f"<OrderedQueue {self.name} ({self.partitions} partitions)>"

    def partition_of(self, key: str) -> Partition:
        """CRC-32, not ``hash()``: every process must map a key to the same partition."""
        return self.parts[zlib.crc32(key.encode()) % self.partitions]

    def handler(self, fn: F | None = None, *, concurrency: int = 32) -> Any:
        """Register the handler (a ``Message`` -> None function, async or sync).

        It runs inside every ``tidings worker`` of the app (as a worker service)::

            @orders.handler(concurrency=64)
            async def handle(msg: Message) -> None: ...
        """
        import inspect

        if concurrency < 1:
            raise ValidationError("concurrency", "must be >= 1")

        def register(func: F) -> F:
            first = self.handler_spec is None
            self.handler_spec = OrderedSpec(func, inspect.iscoroutinefunction(func), concurrency)
            if first:
                self.app.add_worker_service(self._serve)
            return func

        return register(fn) if fn is not None else register

    async def _serve(self, worker: Worker) -> None:
        from .runner import OrderedRunner, log

        try:
            await OrderedRunner(self, worker.consumer,
                                shutdown_grace=worker.shutdown_grace).run(worker.stopped)
        except Exception:
            log.exception("ordered queue %s stopped working", self.name)
            raise

    # -- publishing --------------------------------------------------------------------

    async def publish(self, payload: Any, *, key: str, headers: dict[str, str] | None = None,
                      correlation_id: str | None = None) -> str:
        """Publish one message after every earlier message of ``key``; returns its id."""
        if correlation_id is not None:
            headers = {**(headers or {}), "correlation_id": correlation_id}
        return (await self.publish_many([(key, payload)], headers=headers))[0]

    async def publish_many(self, items: Iterable[tuple[str, Any]], *,
                           headers: dict[str, str] | None = None) -> list[str]:
        """Publish ``(key, payload)`` pairs, in order per key; one round trip in all."""
        items = list(items)
        if not items:
            return []
        await self.ensure_ready()
        created = now_ms()
        ids: list[str] = []
        batches: dict[int, tuple[list[str], list[Any]]] = defaultdict(lambda: ([], []))
        for key, payload in items:
            if not isinstance(key, str) or not 0 < len(key) <= 512:
                raise ValidationError("key", "must be a non-empty string of <= 512 chars")
            msg_id = new_message_id()
            raw = encode(Message(msg_id, self.name, payload, {**(headers or {}),
                                                               KEY_HEADER: key},
                                 created_at_ms=created))
            if len(raw) > self.max_payload_bytes:
                raise ValidationError("payload", f"encoded message is {len(raw)} bytes")
            part = self.partition_of(key)
            keys, args = batches[part.index]
            if not keys:
                keys += part.keys
            list_key = part.list_key(key)
            if list_key not in keys:
                keys.append(list_key)
            args += (keys.index(list_key) + 1, key, msg_id.encode() + b"|" + raw)
            ids.append(msg_id)
        client = self.app.broker.client
        pipe = client.pipeline(transaction=False)
        for keys, args in batches.values():
            pipe.execute_command("EVALSHA", SCRIPTS.publish.sha, len(keys), *keys, *args)
        pipe.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
        await pipe.execute()
        return ids

    async def ensure_ready(self) -> None:
        """Connect, load the scripts, and refuse a partition count other workers disagree on
        (a different count maps keys to other partitions and would break their order)."""
        if self._checked and self.app.broker.connected:
            return
        if not self.app.broker.connected:
            await self.app.connect()
        client = self.app.broker.client
        for script in SCRIPTS.all():
            await client.execute_command("SCRIPT", "LOAD", script.source)
        await client.hsetnx(self.meta_key, "partitions", self.partitions)
        stored = int(await client.hget(self.meta_key, "partitions"))
        if stored != self.partitions:
            raise ConfigError("partitions", f"ordered queue {self.name!r} has {stored} "
                              f"partitions in Redis; this app says {self.partitions}")
        self._checked = True

    # -- operators ---------------------------------------------------------------------

    async def blocked_keys(self) -> list[BlockedKey]:
        """Keys whose head failed and is retrying, or is held for an operator."""
        await self.ensure_ready()
        pipe = self.app.broker.client.pipeline(transaction=False)
        for part in self.parts:
            pipe.hgetall(part.keys[4])
            pipe.zrange(part.keys[3], 0, -1, withscores=True)
        res = await pipe.execute()
        out: list[BlockedKey] = []
        for part, blocked, waiting in zip(self.parts, res[::2], res[1::2], strict=True):
            due = {text(k): score / 1000 for k, score in waiting}
            for raw_key, raw in blocked.items():
                key, info = text(raw_key), orjson.loads(raw)
                out.append(BlockedKey(key, part.index, str(info.get("state", "blocked")),
                                      str(info.get("id", "")), int(info.get("attempts", 0)),
                                      str(info.get("error", "")), due.get(key)))
        pipe = self.app.broker.client.pipeline(transaction=False)
        for item in out:
            pipe.llen(self.parts[item.partition].list_key(item.key))
        for item, length in zip(out, await pipe.execute(), strict=True):
            item.waiting = max(0, int(length) - 1)
        return sorted(out, key=lambda b: (b.partition, b.key))

    async def retry_key(self, key: str) -> bool:
        """Run a blocked key's head again now, with fresh attempts."""
        return await self._unblock(key, "retry")

    async def skip_key(self, key: str, reason: str = "skipped by operator") -> bool:
        """Dead-letter a blocked key's head; the key goes on with its next message."""
        return await self._unblock(key, "skip", reason)

    async def _unblock(self, key: str, action: str, reason: str = "") -> bool:
        await self.ensure_ready()
        client = self.app.broker.client
        part = self.partition_of(key)
        head = await client.lindex(part.list_key(key), 0)
        if head is None:
            return False
        msg_id, _, raw = bytes(head).partition(b"|")
        msg = decode(raw)
        msg.attempts = 0
        item = msg_id + b"|" + encode(msg)
        done = int(await SCRIPTS.unblock(client, [*part.keys, part.list_key(key)],
                                         [key, action, msg_id, item, reason]))
        if done < 0:
            raise ValidationError("key", f"{key!r} has a message running right now")
        return done == 1

    async def pending(self, key: str) -> int:
        """Messages of ``key`` not yet settled (its head included)."""
        await self.ensure_ready()
        return int(await self.app.broker.client.llen(self.partition_of(key).list_key(key)))

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Dead-lettered messages of every partition: key, message, reason, error."""
        await self.ensure_ready()
        pipe = self.app.broker.client.pipeline(transaction=False)
        for part in self.parts:
            pipe.xrange(part.keys[6], count=limit)
        out: list[dict[str, Any]] = []
        for part, entries in zip(self.parts, await pipe.execute(), strict=True):
            for _, fields in entries:
                f = {text(k): v for k, v in fields.items()}
                out.append({"partition": part.index, "key": text(f["key"]),
                            "message": decode(f["m"]), "reason": text(f["reason"]),
                            "error": text(f["error"]), "dead_at": int(text(f["dead_at"]))})
        return sorted(out, key=lambda d: d["dead_at"])[:limit]

    async def replay_dead_letters(self, key: str | None = None, *,
                                  progress: ProgressCallback | None = None) -> int:
        """Put dead-lettered messages (of every key, or of ``key``) back, attempts reset.

        Each goes to the end of its key's line: after the key's messages published since
        it was dead-lettered (those could not wait for it). Returns how many were replayed.
        ``progress(done, None)`` is called after each batch.
        """
        return await self._dead_letter_action("replay", key, progress)

    async def purge_dead_letters(self, key: str | None = None, *,
                                 progress: ProgressCallback | None = None) -> int:
        """Delete dead-lettered messages (of every key, or of ``key``); returns how many."""
        return await self._dead_letter_action("purge", key, progress)

    async def _dead_letter_action(self, action: str, key: str | None,
                                  progress: ProgressCallback | None, chunk: int = 500) -> int:
        await self.ensure_ready()
        client = self.app.broker.client
        parts = self.parts if key is None else [self.partition_of(key)]
        done = 0
        for part in parts:
            start = "-"
            while True:
                entries = await client.xrange(part.keys[6], min=start, count=chunk)
                if not entries:
                    break
                keys, args = list(part.keys), list[Any]([action])
                for entry_id, fields in entries:
                    entry_key = text(fields[b"key"])
                    if key is not None and entry_key != key:
                        continue
                    if action == "purge":  # only the entry id matters
                        args += (entry_id, 0, entry_key, "")
                        continue
                    msg = decode(fields[b"m"])
                    msg.attempts = 0
                    list_key = part.list_key(entry_key)
                    if list_key not in keys:
                        keys.append(list_key)
                    args += (entry_id, keys.index(list_key) + 1, entry_key,
                             fields[b"i"] + b"|" + encode(msg))
                if len(args) > 1:
                    done += int(await SCRIPTS.replay(client, keys, args))
                    if progress is not None:
                        progress(done, None)
                if len(entries) < chunk:
                    break
                start = "(" + text(entries[-1][0])
        if action == "replay" and done:
            await client.xadd(self.wake_key, {"w": "1"}, maxlen=1, approximate=False)
        return done

    async def stats(self) -> OrderedStats:
        await self.ensure_ready()
        pipe = self.app.broker.client.pipeline(transaction=False)
        for part in self.parts:
            k = part.keys
            pipe.hmget(k[0], "w", "x")
            pipe.llen(k[1])
            pipe.hlen(k[2])
            pipe.zcard(k[3])
            pipe.hlen(k[4])
            pipe.xlen(k[6])
            pipe.hgetall(k[7])
        res = await pipe.execute()
        owners: dict[int, str] = {}
        totals = [0] * 5
        counters: dict[str, int] = defaultdict(int)
        now = now_ms()
        for part in self.parts:
            row = res[7 * part.index: 7 * part.index + 7]
            worker, expiry = row[0]
            live = worker and expiry and int(expiry) > now
            owners[part.index] = text(worker) if live else ""
            for i in range(5):
                totals[i] += int(row[i + 1])
            for name, value in row[6].items():
                counters[text(name)] += int(value)
        return OrderedStats(self.name, self.partitions, owners, ready=totals[0],
                            active=totals[1], waiting=totals[2], blocked=totals[3],
                            dead=totals[4], counters=dict(counters))


