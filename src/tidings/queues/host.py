"""What a queue needs of the app that declares it (the app implements this interface)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..core.clock import Clock
from ..core.keys import KeySpace
from ..core.middleware import Middleware, MiddlewareChain
from ..core.settings import Settings
from ..engine.broker import Broker

if TYPE_CHECKING:
    from .queue import Queue

E = TypeVar("E")


class QueueHost(Protocol):
    """The app as its queues see it: settings, connection, keys, middleware, clock."""

    settings: Settings
    broker: Broker
    key_space: KeySpace
    middleware: MiddlewareChain
    clock: Clock

    async def connect(self) -> Any: ...


class ExtensionHost(QueueHost, Protocol):
    """The app as its extensions (flow control, schedules, ordered queues) see it."""

    @property
    def queues(self) -> dict[str, Queue]: ...

    def get_queue(self, queue: Queue | str) -> Queue:
        """The declared queue ``queue`` names (UnknownQueueError if none)."""

    def add_middleware(self, middleware: Middleware) -> None: ...

    def add_worker_service(self, service: Callable[[Any], Coroutine[Any, Any, None]]
                           ) -> None: ...

    def extension(self, kind: Callable[[Any], E]) -> E:
        """The app's one instance of extension ``kind``, made by ``kind(app)`` once."""

    def adopt(self, extension: object) -> None:
        """Hold ``extension`` as the app's one instance of its type, unless one exists."""
