"""The application object: settings, queues, middleware and the server connection."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .core.config import build_queue_config
from .core.errors import UnknownQueueError, ValidationError
from .core.events import EventBus, Middleware
from .core.settings import Settings, load_settings
from .engine.broker import Broker
from .queues.queue import Queue

if TYPE_CHECKING:
    from .core.progress import ProgressCallback
    from .flow.control import FlowControl
    from .scheduling.schedules import Schedules
    from .sync import SyncTidings
    from .worker import Worker, WorkerService


class Tidings:
    """A tidings application.

    With no ``redis_url`` (and no ``TIDINGS_REDIS_URL``) it starts the embedded server::

        app = Tidings()
        email = app.queue("email", max_attempts=5, visibility_timeout=30)

        async with app:
            await email.publish({"to": "a@b.c"}, priority="high")
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        middleware: Sequence[Middleware] = (),
        **overrides: Any,
    ) -> None:
        if redis_url is not None:
            overrides["redis_url"] = redis_url
        self.settings = settings or load_settings(**overrides)
        self.queues: dict[str, Queue] = {}
        self.events = EventBus(middleware)
        self.broker = Broker(self.settings)
        self.worker_services: list[WorkerService] = []
        self._sync: SyncTidings | None = None
        self._sync_lock = threading.Lock()

    def add_worker_service(self, service: WorkerService) -> None:
        """Run ``await service(worker)`` inside every worker, cancelled when it stops."""
        self.worker_services.append(service)

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

    @property
    def flow(self) -> FlowControl:
        """Fleet-wide flow control: breakers, rate and concurrency limits, pause (one per app)."""
        from .flow.control import FlowControl

        return FlowControl.of(self)

    @property
    def schedules(self) -> Schedules:
        """Recurring schedules (one per app); workers of the app then run the ticker."""
        from .scheduling.schedules import schedules

        return schedules(self)

    def add_middleware(self, middleware: Middleware) -> None:
        self.events.add(middleware)

    async def connect(self) -> Tidings:
        """Connect (starting the embedded server if no URL is set) and check the server."""
        await self.broker.connect(list(self.queues.values()))
        return self

    async def close(self) -> None:
        await self.broker.close()

    async def __aenter__(self) -> Tidings:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def worker(self, queues: Sequence[str] | None = None, **options: Any) -> Worker:
        """A worker for ``queues`` (default: every queue with a handler)."""
        from .worker import Worker

        return Worker(self, queues, **options)

    async def delete_queue(self, name: str, *, force: bool = False,
                           progress: ProgressCallback | None = None) -> int:
        """Delete the queue ``name`` (declared here or known to the server) for good.

        Returns how many keys went. Raises :class:`UnknownQueueError` for a name neither
        this app nor the server knows, and :class:`~tidings.errors.QueueNotEmptyError`
        while the queue holds messages or live workers consume it, unless ``force``.
        """
        from .queues.admin import find_queue

        if not self.broker.connected:
            await self.connect()
        queue = await find_queue(self, name)
        if queue is None:
            raise UnknownQueueError(name)
        count = await queue.delete(force=force, progress=progress)
        self.queues.pop(name, None)
        return count

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
