"""The application object, and the composition root: settings, clock, keys, middleware,
the server connection, queues and the extensions that plug into them.

Everything below the app (queues, the worker, flow control, schedules, ordered queues)
knows the app only as the interface it needs (:class:`tidings.queues.host.QueueHost`,
``ExtensionHost``); the app is the one place that knows them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .core.clock import SYSTEM_CLOCK, Clock
from .core.config import Durability, build_queue_config
from .core.errors import UnknownQueueError, ValidationError
from .core.keys import KeySpace
from .core.middleware import Middleware, MiddlewareChain, WorkerView
from .core.progress import ProgressCallback
from .core.settings import Settings, load_settings
from .engine.broker import Broker
from .flow.control import FlowControl
from .queues import registry
from .queues.queue import Queue

if TYPE_CHECKING:
    from .ledger.extension import Ledger
    from .observability.extension import Observability
    from .routing import Topics
    from .scheduling.schedules import Schedules
    from .security.audit import Audit, AuditRecord
    from .sync import SyncTidings
    from .worker import Worker

E = TypeVar("E")
WorkerService = Callable[[Any], Coroutine[Any, Any, None]]


class _Service(Middleware):
    """A worker service (``app.add_worker_service``) as a middleware's worker loop."""

    def __init__(self, service: WorkerService) -> None:
        self.service = service

    async def worker_loop(self, worker: WorkerView) -> None:
        await self.service(worker)


class LedgerTrailSink:
    """The ledger's audit trail as a sink of the security audit: the outcome of each
    operation (done, failed or denied; "allowed" always has one of them after it)."""

    OUTCOMES = frozenset({"done", "failed", "denied"})

    def __init__(self, app: Tidings) -> None:
        self.app = app

    async def record(self, record: AuditRecord) -> None:
        if record.outcome not in self.OUTCOMES:
            return
        await self.app.ledger.audit.record(
            record.action, record.target or None,
            {"outcome": record.outcome, "permission": record.permission, **record.detail},
            actor=record.principal)


class Tidings:
    """A tidings application.

    With no ``redis_url`` (and no ``TIDINGS_REDIS_URL``) it starts the embedded server::

        app = Tidings()
        email = app.queue("email", max_attempts=5, visibility_timeout=30)

        async with app:
            await email.publish({"to": "a@b.c"}, priority="high")

    ``clock`` (default: the system clock) is handed to everything that reads time in
    Python; tests pass a :class:`tidings.core.clock.ManualClock` to move time by hand.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        middleware: Sequence[Middleware] = (),
        clock: Clock = SYSTEM_CLOCK,
        **overrides: Any,
    ) -> None:
        if redis_url is not None:
            overrides["redis_url"] = redis_url
        self.settings = settings or load_settings(**overrides)
        self.clock = clock
        self.key_space = KeySpace(self.settings.key_prefix)
        self.middleware = MiddlewareChain(middleware, clock)
        self.broker = Broker(self.settings, clock)
        self.queues: dict[str, Queue] = {}
        self._extensions: dict[type, Any] = {}
        self._sync: SyncTidings | None = None
        self._sync_lock = threading.Lock()
        self.extension(FlowControl)  # every worker obeys a queue pause

    # -- composition -------------------------------------------------------------------

    def extension(self, kind: Callable[[Tidings], E]) -> E:
        """The app's one instance of extension ``kind``, made by ``kind(app)`` on first use.

        Extensions (flow control, schedules, campaigns, ordered queues) are held here, by
        the app, so two apps in one process never share one.
        """
        found = self._extensions.get(kind)  # type: ignore[call-overload]
        if found is None:
            found = self._extensions[kind] = kind(self)  # type: ignore[index]
        return found  # type: ignore[no-any-return]

    def adopt(self, extension: object) -> None:
        """Hold ``extension`` as the app's one instance of its type, unless one exists (an
        extension made by hand, with non-default options, before its first use)."""
        self._extensions.setdefault(type(extension), extension)

    def add_middleware(self, middleware: Middleware) -> None:
        """Add ``middleware`` after those the app has (see :mod:`tidings.core.middleware`)."""
        self.middleware.add(middleware)

    def add_worker_service(self, service: WorkerService) -> None:
        """Run ``await service(worker)`` inside every worker, cancelled when it stops."""
        self.add_middleware(_Service(service))

    @property
    def flow(self) -> FlowControl:
        """Fleet-wide flow control: breakers, rate and concurrency limits, pause."""
        return self.extension(FlowControl)

    @property
    def observability(self) -> Observability:
        """Metrics, health endpoints, tracing, alerts and analytics of this app."""
        from .observability.extension import Observability

        found = self.extension(Observability)
        if found.breakers is None:
            found.breakers = self._breaker_states
        return found

    async def _breaker_states(self) -> dict[str, str]:
        """Every breaker's state by name, for the fleet metrics (flow control knows them)."""
        return {name: state.state.value
                for name, (state, _) in (await self.flow.breaker_states()).items()}

    @property
    def ledger(self) -> Ledger:
        """The PostgreSQL ledger, outbox relay and audit trail (``tidings[ledger]``)."""
        from .ledger.extension import Ledger

        return self.extension(Ledger)

    @property
    def audit(self) -> Audit:
        """The authorisation check and audit of management operations (the CLI's and the
        HTTP API's), writing to the ledger's hash-chained trail too when a database is
        configured, so one trail holds every administrative operation."""
        from .security.audit import Audit

        audit = self.extension(Audit)
        if self.ledger.configured and not any(isinstance(s, LedgerTrailSink)
                                              for s in audit.sinks):
            audit.add_sink(LedgerTrailSink(self))
        return audit

    @property
    def schedules(self) -> Schedules:
        """Recurring schedules; workers of the app then run the ticker."""
        from .scheduling.schedules import Schedules

        return self.extension(Schedules)

    @property
    def topics(self) -> Topics:
        """Topic publishing and the routing rules (``app.topics.publish("order.shipped",
        payload)``)."""
        from .routing import Topics

        return self.extension(Topics)

    # -- queues ------------------------------------------------------------------------

    def queue(self, name: str, **options: Any) -> Queue:
        """Declare (or return the already declared) queue ``name``.

        Options are :class:`QueueConfig` fields (``visibility_timeout``, ``weights``,
        ``durability``, ``default_ttl`` ...) plus flat retry options ``max_attempts``,
        ``backoff_base``, ``backoff_factor``, ``backoff_cap``, ``jitter``.
        """
        if name in self.queues and not options:
            return self.queues[name]
        queue = Queue(self, build_queue_config(name, **options))
        self.queues[name] = queue
        if queue.config.encryption is not None:
            from .security.encryption import Encryption

            self.extension(Encryption)
        return queue

    def get_queue(self, queue: Queue | str) -> Queue:
        """The declared queue ``queue`` names (or is): the one resolver of ``Queue | str``.

        Every API that takes a queue or its name goes through here, so all of them refuse
        a name never declared with :meth:`queue` (UnknownQueueError) instead of declaring
        it with default settings, and refuse a Queue of another app.
        """
        if isinstance(queue, Queue):
            if queue.app is not self:
                raise ValidationError("queue", f"queue {queue.name!r} belongs to another "
                                      "Tidings app; declare it on this one")
            return queue
        if not isinstance(queue, str):
            raise ValidationError("queue", "must be a Queue or the name of one, got "
                                  f"{type(queue).__name__}")
        try:
            return self.queues[queue]
        except KeyError:
            raise UnknownQueueError(queue) from None

    async def find_queue(self, name: str) -> Queue | None:
        """The queue ``name`` if this app declares it or the server has it, else None.

        Reads only: an unknown name leaves no trace on the server (a queue the server has
        is declared on this app object, with default settings).
        """
        declared = self.queues.get(name)
        if declared is not None:
            return declared
        if not await registry.known_on_server(self.broker, self.key_space, name):
            return None
        return self.queue(name)

    async def queue_names(self) -> list[str]:
        """Every queue name the server's registry has or this app declares, sorted."""
        names = await registry.registered_names(self.broker, self.key_space)
        return sorted(set(names) | set(self.queues))

    async def delete_queue(self, name: str, *, force: bool = False,
                           progress: ProgressCallback | None = None) -> int:
        """Delete the queue ``name`` (declared here or known to the server) for good.

        Returns how many keys went. Raises :class:`UnknownQueueError` for a name neither
        this app nor the server knows, and :class:`~tidings.errors.QueueNotEmptyError`
        while the queue holds messages or live workers consume it, unless ``force``.
        """
        if not self.broker.connected:
            await self.connect()
        queue = await self.find_queue(name)
        if queue is None:
            raise UnknownQueueError(name)
        count = await queue.delete(force=force, progress=progress)
        self.queues.pop(name, None)
        return count

    # -- connection --------------------------------------------------------------------

    async def connect(self) -> Tidings:
        """Connect (starting the embedded server if no URL is set) and check the server."""
        if self.broker.connected:
            return self
        queues = list(self.queues.values())
        await self.broker.connect(
            needs_disk=any(q.config.durability is Durability.DISK for q in queues),
            replicated=[q.name for q in queues if q.config.durability is Durability.REPLICATED])
        await self.broker.retrying(registry.register, self.broker, self.key_space, queues)
        return self

    async def close(self) -> None:
        for extension in list(self._extensions.values()):
            closing = getattr(extension, "app_closing", None)  # flush, stop listeners
            if closing is not None:
                await closing()
        await self.broker.close()

    async def __aenter__(self) -> Tidings:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- running -----------------------------------------------------------------------

    def worker(self, queues: Sequence[str] | None = None, **options: Any) -> Worker:
        """A worker for ``queues`` (default: every queue with a handler)."""
        from .worker import Worker

        return Worker(self, queues, **options)

    def sync(self) -> SyncTidings:
        """The app's blocking facade for producers that are not async (Django, Flask).

        The same facade until it is closed (``close()``, or leave its ``with`` block), so
        calling ``app.sync()`` again anywhere in the process is cheap and safe::

            with app.sync() as client:
                client.publish("email", {"to": "a@b.c"})
        """
        from .sync import SyncTidings

        with self._sync_lock:
            if self._sync is None or self._sync.closed:
                self._sync = SyncTidings(self)
            return self._sync
