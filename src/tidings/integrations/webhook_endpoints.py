"""Webhooks per subscriber: each message goes to the endpoint of the subscriber it names,
looked up in a registry of endpoints in Redis.

::

    registry = EndpointRegistry(app)
    await registry.put(Endpoint("acme", "https://acme.example/hooks", secret="whsec_..."))
    hooks = SubscriberWebhooks(registry)
    hooks.install(app.queue("webhooks", max_attempts=10))
    await app.queue("webhooks").publish({"event": "order.paid"},
                                        headers={"subscriber": "acme"})

The subscriber comes from the message's ``subscriber`` header, else its payload's
``subscriber`` field (both names configurable). The URL always comes from the registry,
never from the message: a publisher cannot make the workers POST to an address no operator
registered (server-side request forgery).

Per endpoint: retries go through the queue (the same signed ``webhook-id`` each time); a
circuit breaker per subscriber (``app.flow.key_breaker("webhook")``, named
``webhook:SUBSCRIBER`` in ``tidings breakers``) puts that subscriber's messages back
without spending attempts while its endpoint is down, so the other subscribers are not held
up; an optional rate limit per subscriber. After ``disable_after`` failed attempts in a row
(a 429 is not a failure; any success resets the count) the endpoint is disabled: its
messages are dead-lettered with reason ``webhook endpoint SUBSCRIBER disabled`` until an
operator re-enables it (:meth:`EndpointRegistry.enable`, ``tidings webhooks enable``) and
replays the dead letters (``tidings dlq replay``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from redis.asyncio import Redis

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.config import DEFAULT_HANDLER_CONCURRENCY
from ..core.errors import ConfigError, DeadLetter, Retry
from ..core.keys import KeySpace
from ..core.message import Message
from ..core.stored import text
from ..queues.queue import Queue
from .channel import HttpChannel, ProviderLimits, counts_as_failure
from .http import HttpOptions, Throttled
from .mapping import require_positive, require_text
from .webhook import check_headers, secret_keys, signed_request

log = logging.getLogger("tidings.integrations")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One subscriber's endpoint: ``url``, ``secret`` and ``previous_secrets`` (never
    shown); ``disabled`` holds the reason while it is disabled, ``failures`` the failed
    attempts in a row."""

    subscriber: str
    url: str
    secret: str = field(repr=False)
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    disabled: str = ""
    failures: int = 0

    def __post_init__(self) -> None:
        require_text("subscriber", self.subscriber)
        require_text("url", self.url)
        secret_keys("secret", [self.secret])
        secret_keys("previous_secrets", self.previous_secrets)

    def keys(self) -> list[bytes]:
        return secret_keys("secret", [self.secret, *self.previous_secrets])


class EndpointRegistry:
    """The subscribers' endpoints, one Redis hash each (``app`` gives the client and the
    key prefix; or pass ``client=`` and ``prefix=``)."""

    def __init__(self, app: Any = None, *, client: Redis | None = None,
                 prefix: str | None = None) -> None:
        self._app = app
        self._client = client
        self.key_space = app.key_space if app is not None else KeySpace(prefix or "tidings")

    @property
    def client(self) -> Redis:
        if self._client is not None:
            return self._client
        return cast(Redis, self._app.broker.client)

    async def put(self, endpoint: Endpoint, *, allow_http: bool = False) -> None:
        """Register or replace ``endpoint`` (enabled, failures reset); https unless
        ``allow_http``."""
        HttpOptions(allow_http=allow_http).check_url("url", endpoint.url)
        key = self.key_space.webhook_endpoint(endpoint.subscriber)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping={"url": endpoint.url, "secret": endpoint.secret,
                                "previous": json.dumps(list(endpoint.previous_secrets)),
                                "failures": 0})
        pipe.sadd(self.key_space.webhook_subscribers, endpoint.subscriber)
        await pipe.execute()

    async def get(self, subscriber: str) -> Endpoint | None:
        raw = await self.client.hgetall(self.key_space.webhook_endpoint(subscriber))
        fields = {text(k): text(v) for k, v in raw.items()}
        if "url" not in fields:  # unknown, or removed while an attempt was counted
            return None
        return Endpoint(subscriber, fields["url"], fields["secret"],
                        tuple(json.loads(fields.get("previous", "[]"))),
                        disabled=fields.get("disabled", ""),
                        failures=int(fields.get("failures", 0)))

    async def list(self) -> list[Endpoint]:
        names = sorted(text(n) for n in await self.client.smembers(
            self.key_space.webhook_subscribers))
        found = [await self.get(name) for name in names]
        return [e for e in found if e is not None]

    async def remove(self, subscriber: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.key_space.webhook_endpoint(subscriber))
        pipe.srem(self.key_space.webhook_subscribers, subscriber)
        deleted, _ = await pipe.execute()
        return bool(deleted)

    async def failed(self, subscriber: str, disable_after: int, reason: str) -> bool:
        """Count a failed attempt; True for the one call that disabled the endpoint."""
        key = self.key_space.webhook_endpoint(subscriber)
        if int(await self.client.hincrby(key, "failures", 1)) < disable_after:
            return False
        why = f"{disable_after} failed attempts in a row, the last: {reason}"
        return bool(await self.client.hsetnx(key, "disabled", why))

    async def succeeded(self, subscriber: str) -> None:
        await self.client.hset(self.key_space.webhook_endpoint(subscriber), "failures", 0)

    async def disable(self, subscriber: str, reason: str = "disabled by an operator") -> bool:
        return await self._set_disabled(subscriber, reason)

    async def enable(self, subscriber: str) -> bool:
        """Re-enable an endpoint (failures reset); False if the subscriber is unknown."""
        return await self._set_disabled(subscriber, "")

    async def _set_disabled(self, subscriber: str, reason: str) -> bool:
        key = self.key_space.webhook_endpoint(subscriber)
        if not await self.client.exists(key):
            return False
        if reason:
            await self.client.hset(key, "disabled", reason)
        else:
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(key, "disabled")
            pipe.hset(key, "failures", 0)
            await pipe.execute()
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberWebhooksConfig(HttpOptions):
    """Where a message names its subscriber (``subscriber_header``, else the payload's
    ``subscriber_field``; None: not there); ``disable_after`` failed attempts in a row
    disable an endpoint; ``limits``: each endpoint's breaker (and rate, per subscriber);
    extra ``headers`` sent to every endpoint."""

    subscriber_header: str = "subscriber"
    subscriber_field: str | None = "subscriber"
    disable_after: int = 20
    limits: ProviderLimits = field(default_factory=ProviderLimits)
    headers: dict[str, str] = field(default_factory=dict)
    breaker: str = "webhook"

    def __post_init__(self) -> None:
        require_text("subscriber_header", self.subscriber_header)
        require_positive("disable_after", self.disable_after, integer=True)
        require_text("breaker", self.breaker)
        self.check_http()
        check_headers(self.headers)

    def subscriber_of(self, message: Message) -> str | None:
        found = message.headers.get(self.subscriber_header)
        if not found and self.subscriber_field and isinstance(message.payload, dict):
            value = message.payload.get(self.subscriber_field)
            found = value if isinstance(value, str) else None
        return found or None


class SubscriberWebhooks(HttpChannel):
    """A tidings handler delivering each message to its subscriber's endpoint (see the
    module doc); ``install(queue)`` adds the per-endpoint breaker and rate limit."""

    def __init__(self, registry: EndpointRegistry,
                 config: SubscriberWebhooksConfig | None = None, *,
                 clock: Clock = SYSTEM_CLOCK, client: httpx.AsyncClient | None = None) -> None:
        self.config = config or SubscriberWebhooksConfig()
        super().__init__(self.config, clock=clock, client=client)
        self.registry = registry
        self.limits = self.config.limits

    def __repr__(self) -> str:
        return f"<SubscriberWebhooks by {self.config.subscriber_header}>"

    async def endpoint_of(self, message: Message) -> Endpoint:
        """The enabled endpoint ``message`` goes to; :class:`DeadLetter` if there is none."""
        subscriber = self.config.subscriber_of(message)
        if subscriber is None:
            raise DeadLetter(f"webhook: the message names no subscriber (header "
                             f"{self.config.subscriber_header!r} or payload field "
                             f"{self.config.subscriber_field!r})")
        endpoint = await self.registry.get(subscriber)
        if endpoint is None:
            raise DeadLetter(f"webhook: no endpoint registered for subscriber {subscriber!r}")
        if endpoint.disabled:
            raise DeadLetter(f"webhook endpoint {subscriber} disabled: {endpoint.disabled}")
        try:
            self.config.check_url("url", endpoint.url)
        except ConfigError as exc:
            raise DeadLetter(f"webhook endpoint {subscriber}: {exc}") from None
        return endpoint

    async def handle(self, message: Message) -> None:
        """POST ``message`` to its subscriber's endpoint; returns on 2xx."""
        endpoint = await self.endpoint_of(message)
        body, headers = signed_request(message, endpoint.keys(), self.clock,
                                       self.config.headers)
        try:
            response = await self._client.post(endpoint.url, content=body, headers=headers)
            self.outcome(response, "http")
        except Throttled:
            raise
        except (Retry, DeadLetter, httpx.HTTPError) as exc:
            reason = getattr(exc, "reason", "") or f"{type(exc).__name__}: {exc}"
            if await self.registry.failed(endpoint.subscriber, self.config.disable_after,
                                          reason):
                log.warning("webhook endpoint %s disabled after %d failed attempts in a row",
                            endpoint.subscriber, self.config.disable_after)
            raise
        if endpoint.failures:
            await self.registry.succeeded(endpoint.subscriber)

    def install(self, queue: Queue, *, concurrency: int = DEFAULT_HANDLER_CONCURRENCY
                ) -> Queue:
        """Make this consumer ``queue``'s handler, behind a breaker per subscriber (and a
        rate limit per subscriber when ``limits.rate`` is set); returns the queue."""
        flow = cast(Any, queue.app).flow  # the app, a layer above, made the queue
        limits, key = self.config.limits, self.config.subscriber_of
        flow.key_breaker(self.config.breaker, key=key, is_failure=counts_as_failure,
                         failure_threshold=limits.failure_threshold, window=limits.window,
                         open_for=limits.open_for).protect(queue)
        if limits.rate is not None:
            flow.key_rate_limit(f"{self.config.breaker}-rate", limits.rate, key=key,
                                burst=limits.burst or 1).protect(queue)
        queue.handler(concurrency=concurrency)(self.handle)
        return queue
