"""What the worker needs from a queue: the handler spec, fetch gates, worker services."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ..core.errors import ValidationError

if TYPE_CHECKING:
    from ..worker.worker import Worker
    from .queue import Queue


class FetchGate(Protocol):
    """Decides how many messages a queue's fetch loop may take now (flow control).

    ``admit`` may wait (a paused queue, an open circuit breaker, an empty rate bucket) and
    returns how many of ``free`` slots may be filled; 0 means ask again shortly.
    """

    async def admit(self, queue: Queue, free: int) -> int: ...


WorkerService = Callable[["Worker"], Coroutine[Any, Any, None]]


@dataclass(slots=True, frozen=True)
class HandlerSpec:
    fn: Callable[..., Any]
    is_async: bool
    concurrency: int
    batch_size: int | None
    batch_wait: float

    @classmethod
    def build(cls, fn: Callable[..., Any], concurrency: int, batch_size: int | None,
              batch_wait: timedelta | float) -> HandlerSpec:
        if type(concurrency) is not int or concurrency < 1:
            raise ValidationError("concurrency", f"must be an int >= 1, got {concurrency!r}")
        if batch_size is not None and (type(batch_size) is not int or batch_size < 1):
            raise ValidationError("batch_size", f"must be an int >= 1, got {batch_size!r}")
        wait = batch_wait.total_seconds() if isinstance(batch_wait, timedelta) else batch_wait
        if not isinstance(wait, (int, float)) or not 0 <= wait <= 60:
            raise ValidationError("batch_wait", f"must be 0 to 60 seconds, got {batch_wait!r}")
        return cls(fn, inspect.iscoroutinefunction(fn), concurrency, batch_size, float(wait))
