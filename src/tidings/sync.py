"""A blocking facade for producers that are not async (a Django or Flask orchestrator).

It runs the async client on a private event loop in a daemon thread. ``app.sync()``
returns the same facade until it is closed, so every caller in the process shares one
connection pool and one loop::

    client = app.sync()
    client.publish("email", {"to": "a@b.c"}, priority="high")
    client.close()          # or: with app.sync() as client: ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .app import Tidings
    from .queues.queue import Outgoing
    from .queues.stats import QueueStats
    from .routing import RouteResult

T = TypeVar("T")


class SyncTidings:
    """Thread-safe blocking calls onto a Tidings app; get it with :meth:`Tidings.sync`."""

    def __init__(self, app: Tidings, timeout: float = 30.0) -> None:
        self.app = app
        self.timeout = timeout
        self.closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tidings-sync",
                                        daemon=True)
        self._thread.start()
        try:
            self._run(app.connect())
        except BaseException:
            self.close()  # no thread left behind by a server that was not there
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    def publish(self, queue: str, payload: Any, **options: Any) -> str:
        """Same options as :meth:`Queue.publish`."""
        return self._run(self.app.get_queue(queue).publish(payload, **options))

    def publish_many(self, queue: str, items: Iterable[Outgoing | Any],
                     chunk_size: int = 1000) -> list[str]:
        return self._run(self.app.get_queue(queue).publish_many(items, chunk_size=chunk_size))

    def publish_topic(self, topic: str, payload: Any, **options: Any) -> RouteResult:
        """Publish to a topic; same options as :meth:`tidings.routing.Topics.publish`."""
        return self._run(self.app.topics.publish(topic, payload, **options))

    def cancel(self, queue: str, message_id: str) -> bool:
        return self._run(self.app.get_queue(queue).cancel(message_id))

    def stats(self, queue: str) -> QueueStats:
        return self._run(self.app.get_queue(queue).stats())

    def close(self) -> None:
        """Close the app's connection and stop the private loop (a second call is a no-op)."""
        if self.closed:
            return
        self.closed = True
        if self._loop.is_running():
            try:
                self._run(self.app.close())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> SyncTidings:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
