"""The connection to the Redis-compatible server: start-up checks, bounded retries, durability.

Everything that talks to the server for the producer side and for operators goes through
:class:`Broker`, so reconnect and error translation live in one place.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    NoScriptError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.config import Durability
from ..core.errors import (
    AccessDeniedError,
    AuthenticationFailedError,
    BrokerUnavailableError,
    DurabilityError,
    PermissionDeniedError,
    ServerConfigError,
    UntrustedCertificateError,
)
from ..core.message import Priority, now_ms
from ..core.settings import Settings
from ..queues.stored import text as text  # re-exported: the loops read stored ids with it
from .scripts import SCRIPTS, Script

if TYPE_CHECKING:
    from ..queues.inspection import InspectedMessage
    from ..queues.queue import Queue, QueueStats

log = logging.getLogger("tidings.engine.broker")
T = TypeVar("T")
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class _HiredisPacking:
    """Packs commands with hiredis' C encoder instead of redis-py's Python one.

    redis-py spends about 2 us per argument building a command; a publish chunk or an ack
    batch has thousands of arguments, so this is most of the client's cost per message.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        # redis-py sends some commands as one string ("CLIENT SETINFO"); split like it does.
        if isinstance(first, (str, bytes)) and len(first.split()) > 1:
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class _RefusalsAreFinal:
    """Turns a refusal met while connecting into tidings' typed error, at the source.

    redis-py reports a wrong or missing password (WRONGPASS, NOAUTH) and an untrusted TLS
    certificate as ConnectionErrors, which every ``except TRANSIENT`` would retry as an
    outage. Raised here, as errors that are not ConnectionErrors, no loop retries them.
    """

    username: str | None

    async def connect(self) -> None:
        try:
            await super().connect()  # type: ignore[misc]
        except (RedisError, OSError) as exc:
            refusal = refusal_of(exc, getattr(self, "username", None) or "default",
                                 "connecting")
            if refusal is not None:
                raise refusal from exc
            certificate = _untrusted_certificate(exc)
            if certificate is not None:
                raise UntrustedCertificateError(self._server(), certificate) from exc
            raise

    def _server(self) -> str:
        path = getattr(self, "path", None)
        return str(path) if path else f"{getattr(self, 'host', '?')}:{getattr(self, 'port', '?')}"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps (redis-py re-raises some errors as ConnectionErrors)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _untrusted_certificate(exc: BaseException) -> str | None:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or str(cause)
        if "CERTIFICATE_VERIFY_FAILED" in str(cause):
            return str(cause)
    return None


# How servers word an ACL refusal: NOPERM replies (Redis, Valkey), and the errors a script
# gets for a command or key its user may not touch (Redis 7.0; Valkey says "ACL failure").
_DENIED_IN_SCRIPT = ("The user executing the script can't", "ACL failure in script")


def refusal_of(exc: BaseException, user: str, what: str = "") -> AccessDeniedError | None:
    """The typed error for a refusal of credentials or permissions, else None.

    ``user`` is the server user we act as; ``what`` says what we were doing (a script's
    name, a command), added to the server's own words, which name the command or key.
    """
    for cause in _causes(exc):
        if isinstance(cause, AccessDeniedError):
            return cause
        detail = str(cause)
        where = f" ({what})" if what else ""
        if isinstance(cause, AuthenticationError) or detail.startswith(("WRONGPASS", "NOAUTH")):
            return AuthenticationFailedError(
                user, f"{detail}{where}; check the user and password in TIDINGS_REDIS_URL")
        if (isinstance(cause, NoPermissionError) or "NOPERM" in detail
                or any(words in detail for words in _DENIED_IN_SCRIPT)):
            return PermissionDeniedError(user, f"{detail}{where}")
    return None


def raise_if_denied(exc: BaseException, user: str, what: str = "") -> None:
    """Raise PermissionDeniedError (or AuthenticationFailedError) if ``exc`` is a refusal.

    For the ``except ResponseError`` of a loop: call it first, so an ACL refusal (NOPERM)
    surfaces at once as a typed error instead of being retried or logged as a server
    hiccup; anything else returns and the caller handles ``exc`` as before.
    """
    refusal = refusal_of(exc, user, what)
    if refusal is not None:
        raise refusal from exc


_packed_classes: dict[type, type] = {}


def _with_fast_packing(connection_class: type) -> type:
    if connection_class not in _packed_classes:
        _packed_classes[connection_class] = type(
            f"Packed{connection_class.__name__}",
            (_HiredisPacking, _RefusalsAreFinal, connection_class), {})
    return _packed_classes[connection_class]


class Broker:
    """One app's connection pool and server-facing operations."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Redis | None = None
        self.url: str | None = None
        self.server_version: tuple[int, ...] = (0,)
        self.has_waitaof = False
        self.user = "default"  # the server user we connect as (from the URL)
        self._lock = asyncio.Lock()

    @property
    def client(self) -> Any:  # redis-py's response types are too loose to be useful here
        if self._client is None:
            raise RuntimeError("not connected: await app.connect() (or use `async with app`)")
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def connect(self, queues: Sequence[Queue]) -> None:
        async with self._lock:
            if self._client is not None:
                return
            url = self.settings.redis_url
            if url is None:
                from .embedded import ensure_server

                url = await asyncio.to_thread(ensure_server, self.settings.data_dir.resolve())
            pool = ConnectionPool.from_url(
                url, socket_timeout=self.settings.socket_timeout, socket_connect_timeout=2.0,
                retry=RedisRetry(NoBackoff(), 0), max_connections=1024,
            )
            pool.connection_class = _with_fast_packing(pool.connection_class)
            client = Redis.from_pool(pool)
            self.url = url
            self.user = pool.connection_kwargs.get("username") or "default"
            self._client = client
            try:
                await self.retrying(self._check_server, queues)
            except BaseException:
                self._client = None
                await client.aclose()
                raise

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _check_server(self, queues: Sequence[Queue]) -> None:
        info = await self.client.info("server")
        memory = await self.client.info("memory")
        persistence = await self.client.info("persistence")
        self.server_version = tuple(int(p) for p in str(info["redis_version"]).split(".")[:3])
        if self.server_version < (7, 0):
            raise ServerConfigError(f"Redis >= 7.0 (or Valkey >= 7.2) is required; server is "
                                    f"{info['redis_version']}")
        policy = memory.get("maxmemory_policy", "noeviction")
        if policy != "noeviction":
            raise ServerConfigError(
                f"the server's maxmemory-policy is {policy!r}: eviction silently deletes queued "
                "messages. Set `maxmemory-policy noeviction` on the server.")
        self.has_waitaof = self.server_version >= (7, 2)
        if any(q.config.durability is Durability.DISK for q in queues):
            await self._check_disk(int(persistence.get("aof_enabled", 0)) == 1)
        for script in SCRIPTS.all():
            await self.client.execute_command("SCRIPT", "LOAD", script.source)
        await self.client.sadd(f"{self.settings.key_prefix}:queues", *[q.name for q in queues]
                               or ["_"])
        for queue in queues:
            await self.ensure_groups(queue)

    async def _check_disk(self, aof_enabled: bool) -> None:
        if not aof_enabled:
            raise ServerConfigError("a queue has durability='disk' but the server's append-only "
                                    "file is off; set `appendonly yes`")
        if self.has_waitaof:
            return
        try:
            fsync = (await self.client.config_get("appendfsync")).get("appendfsync")
        except ResponseError as exc:
            raise_if_denied(exc, self.user, "CONFIG GET appendfsync, for durability='disk'")
            raise ServerConfigError("durability='disk' needs WAITAOF (Redis >= 7.2) or a "
                                    f"readable `appendfsync always`: {exc}") from None
        if fsync != "always":
            raise ServerConfigError(
                f"durability='disk' on a server without WAITAOF needs `appendfsync always`; "
                f"the server has {fsync!r}")

    async def ensure_groups(self, queue: Queue) -> None:
        from ..queues.queue import GROUP

        for lane_key in queue.keys[:3]:
            try:
                await self.client.xgroup_create(lane_key, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                raise_if_denied(exc, self.user, f"XGROUP CREATE {lane_key}")
                if "BUSYGROUP" not in str(exc):
                    raise

    async def retrying(self, op: Callable[..., Awaitable[T]], *args: Any,
                       already_failed: int = 0) -> T:
        """Run ``op``; on connection trouble retry with backoff a bounded number of times."""
        attempts = self.settings.connect_retries + 1
        for attempt in range(already_failed, attempts):
            try:
                return await op(*args)
            except ResponseError as exc:
                raise_if_denied(exc, self.user, _what(op))
                raise
            except TRANSIENT as exc:
                if attempt == attempts - 1:
                    raise BrokerUnavailableError(
                        f"server unreachable after {attempts} attempts: {exc}") from exc
                pause = min(2.0, self.settings.connect_backoff * 2**attempt)
                await asyncio.sleep(pause * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")

    async def call(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:  # the first try without the retry machinery: this is the publish hot path
            return await script(self.client, keys, args)
        except ResponseError as exc:
            raise_if_denied(exc, self.user, f"script {script.name} on {keys[0]}")
            raise
        except TRANSIENT as exc:
            if self.settings.connect_retries == 0:
                raise BrokerUnavailableError(f"server unreachable: {exc}") from exc
            await asyncio.sleep(self.settings.connect_backoff)
            return await self.retrying(script, self.client, keys, args, already_failed=1)

    async def publish(self, queue: Queue, keys: list[str], args: list[Any],
                      script: Script | None = None, ids: list[str] | None = None) -> Any:
        """Run a publishing script (by default publish.lua) with the queue's durability.

        ``ids``: the ids the script writes, for a DurabilityError (publish.lua returns them).
        """
        script = script or SCRIPTS.publish
        durability = queue.config.durability
        if durability is Durability.MEMORY or (
                durability is Durability.DISK and not self.has_waitaof):
            return await self.call(script, keys, args)
        return await self.retrying(self._publish_durable, queue, script, keys, args, ids)

    async def _publish_durable(self, queue: Queue, script: Script, keys: list[str],
                               args: list[Any], ids: list[str] | None) -> Any:
        timeout_ms = int(queue.config.durability_timeout * 1000)
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            if queue.config.durability is Durability.DISK:
                pipe.execute_command("WAITAOF", 1, 0, timeout_ms)
            else:
                pipe.execute_command("WAIT", 1, timeout_ms)
            try:
                result, confirmed = await pipe.execute()
            except NoScriptError:
                await self.client.execute_command("SCRIPT", "LOAD", script.source)
                continue
            ok = (confirmed[0] >= 1 if queue.config.durability is Durability.DISK
                  else confirmed >= 1)
            if not ok:
                ids = ids if ids is not None else [text(r[0]) for r in result]
                raise DurabilityError(
                    f"{queue.config.durability.value} durability not confirmed within "
                    f"{queue.config.durability_timeout}s (confirmation: {confirmed}); the "
                    "message may exist: publish again with the same idempotency key", ids)
            return result
        raise AssertionError("script could not be loaded")

    # -- operator views ----------------------------------------------------------------

    async def queue_names(self) -> list[str]:
        names = await self.client.smembers(f"{self.settings.key_prefix}:queues")
        return sorted(text(n) for n in names if text(n) != "_")

    async def queue_stats(self, queue: Queue) -> QueueStats:
        from ..queues.queue import GROUP, LANE_NAMES, QueueStats

        k = queue.keys
        pipe = self.client.pipeline(transaction=False)
        for lane_key in k[:3]:
            pipe.xlen(lane_key)
            pipe.xpending(lane_key, GROUP)
            pipe.xrange(lane_key, count=1)
        pipe.zcard(k[3])
        pipe.xlen(k[5])
        pipe.zcard(k[10])
        pipe.hgetall(k[8])
        try:
            res = await pipe.execute()
        except ResponseError as exc:
            raise_if_denied(exc, self.user, f"reading the stats of {queue.name}")
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_groups(queue)
            return await self.queue_stats(queue)
        lanes: dict[str, int] = {}
        in_flight = 0
        oldest: int | None = None
        for i, name in enumerate(LANE_NAMES):
            length, pending, first = res[3 * i: 3 * i + 3]
            held = int(pending["pending"]) if pending else 0
            lanes[name] = length - held
            in_flight += held
            if first:
                ts = int(text(first[0][0]).split("-")[0])
                oldest = ts if oldest is None else min(oldest, ts)
        counters = {text(key): int(v) for key, v in res[-1].items()}
        age = None if oldest is None else max(0.0, (now_ms() - oldest) / 1000)
        return QueueStats(queue.name, lanes, in_flight, res[9], res[10], age, res[11], counters)

    async def inspect(self, queue: Queue, message_id: str) -> InspectedMessage | None:
        """Where ``message_id`` is and what it holds; None if the queue does not know it.

        Never raises on malformed stored data: what cannot be read is reported in the
        result (``fields`` as text, ``decode_error``), with ``state`` "unknown" when even
        the location is unreadable.
        """
        from ..queues.inspection import inspect_message

        return await self.retrying(inspect_message, self, queue, message_id)


def _what(op: Any) -> str:
    """What ``op`` does, for an error message: a script's name, else the function's."""
    name = getattr(op, "name", None) if isinstance(op, Script) else None
    return f"script {name}" if name else getattr(op, "__name__", type(op).__name__).lstrip("_")


def lane_label(lane: int) -> str:
    return Priority(lane).label
