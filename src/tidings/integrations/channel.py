"""What every channel consumer (email, SMS, push, webhooks) shares: its provider's limits,
wired into the app's flow control, and the idempotency key it hands the provider.

A channel consumer is a handler object (``handle(message)``) with a frozen config. Its
:meth:`Channel.install` registers the handler on a queue and protects that queue with the
provider's circuit breaker (``app.flow.breaker("provider:NAME")``: while open, no worker
fetches the queue) and its fleet-wide rate limit (``app.flow.rate_limit``): the limits are
tidings.flow's, shared through Redis by every worker of the channel service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import httpx

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.config import DEFAULT_HANDLER_CONCURRENCY
from ..core.errors import ConfigError
from ..core.message import Message
from ..queues.queue import Queue
from .http import HttpOptions, Throttled, raise_for_outcome
from .mapping import require_positive


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """How hard the fleet may push one provider.

    ``rate`` (``"50/s"``, a number per second, or None for no limit) with ``burst``; the
    breaker trips on ``failure_threshold`` failures within ``window`` seconds and lets a
    probe through after ``open_for``. A 429 (:class:`~tidings.integrations.http.Throttled`)
    is not a failure: the provider is up and only asks us to slow down.
    """

    rate: float | str | None = None
    burst: int | None = None
    failure_threshold: int = 5
    window: float = 60.0
    open_for: float = 30.0

    def __post_init__(self) -> None:
        if self.rate is not None and not isinstance(self.rate, str):
            require_positive("rate", self.rate)
        if self.burst is not None:
            require_positive("burst", self.burst, integer=True)
        require_positive("failure_threshold", self.failure_threshold, integer=True)
        require_positive("window", self.window)
        require_positive("open_for", self.open_for)


def counts_as_failure(exc: BaseException) -> bool:
    """What a provider breaker counts: everything but a throttle."""
    return not isinstance(exc, Throttled)


def idempotency_key(message: Message) -> str:
    """The key a provider is given to drop a repeated request: the publisher's idempotency
    key when it set one, else the tidings message id (the same on every retry)."""
    return message.idempotency_key or message.id


class Channel:
    """Base of the channel consumers: ``provider`` names its breaker and rate limit."""

    provider: str = "provider"
    limits: ProviderLimits = ProviderLimits()

    async def handle(self, message: Message) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def close(self) -> None:
        """Release connections; the consumer is not used after."""

    def install(self, queue: Queue, *, concurrency: int = DEFAULT_HANDLER_CONCURRENCY
                ) -> Queue:
        """Make this consumer ``queue``'s handler, behind the provider's breaker and rate
        limit (see the module doc); returns the queue."""
        protect(queue, self.provider, self.limits)
        handler: Callable[[Message], Awaitable[None]] = self.handle
        queue.handler(concurrency=concurrency)(handler)
        return queue


def protect(queue: Queue, provider: str, limits: ProviderLimits) -> None:
    """Put ``queue`` behind ``provider``'s breaker and (if set) rate limit."""
    if not provider:
        raise ConfigError("provider", "must not be empty")
    # The app (a layer above) made the queue; its flow control is reached through it.
    flow = cast(Any, queue.app).flow
    name = f"provider:{provider}"
    flow.breaker(name, is_failure=counts_as_failure,
                 failure_threshold=limits.failure_threshold, window=limits.window,
                 open_for=limits.open_for).protect(queue)
    if limits.rate is not None:
        flow.rate_limit(name, limits.rate, burst=limits.burst).protect(queue)


class HttpChannel(Channel):
    """Base of the HTTP consumers: one pooled httpx client, the shared outcome mapping."""

    def __init__(self, options: HttpOptions, *, clock: Clock = SYSTEM_CLOCK,
                 client: httpx.AsyncClient | None = None) -> None:
        self.options = options
        self.clock = clock
        self._client = client or options.client()

    def outcome(self, response: httpx.Response, label: str, text: str | None = None) -> None:
        """Nothing for 2xx; else Retry / Throttled / DeadLetter (tidings.integrations.http),
        the reason starting with ``label`` and ending with ``text`` (default: the body)."""
        raise_for_outcome(response.status_code, response.headers.get("retry-after"),
                          response.text if text is None else text, clock=self.clock,
                          max_retry_after=self.options.max_retry_after, label=label)

    async def close(self) -> None:
        await self._client.aclose()
