"""A webhook channel consumer: POST each message to a subscriber's URL, signed.

The signature follows the Standard Webhooks spec, made with the ``standardwebhooks`` package
(``pip install 'tidings[webhooks]'``): headers ``webhook-id`` (the tidings message id, the
same on every retry, so the receiver can drop repeats), ``webhook-timestamp`` (Unix seconds)
and ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``
under the secret, one per secret while secrets are rotated. :func:`verify` is the receiving
side's check. The body is the payload as JSON (or the bytes, which must be UTF-8 text: the
spec signs text).

What the endpoint answers decides the outcome (the shared mapping of
:mod:`tidings.integrations.http`): 2xx acks; 429, 408 and 5xx retry after the
``Retry-After`` the endpoint sent (capped), else after the queue's backoff; a timeout or a
connection error retries through the queue's policy; any other status (4xx, 3xx) can never
succeed and is dead-lettered at once with the status as its reason::

    hook = WebhookConsumer(WebhookConfig(url="https://example.com/hooks", secret=secret))
    hook.install(app.queue("webhooks", max_attempts=8))

This consumer posts to one endpoint; :mod:`tidings.integrations.webhook_endpoints` picks
the endpoint per message, from a registry of subscribers.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import ConfigError, DeadLetter, ValidationError
from ..core.message import Message
from .channel import HttpChannel, ProviderLimits
from .http import HttpOptions, retry_after
from .mapping import encode_payload, require_text

__all__ = ["WebhookConfig", "WebhookConsumer", "WebhookSignatureError", "retry_after", "sign",
           "signed_request", "verify"]

SECRET_PREFIX = "whsec_"


class WebhookSignatureError(ValidationError):
    """A webhook whose signature, id or timestamp did not verify (``field`` says which)."""


def _secret_bytes(field_name: str, secret: Any) -> bytes:
    text = require_text(field_name, secret)
    if not text.startswith(SECRET_PREFIX):
        return text.encode()
    try:
        return base64.b64decode(text[len(SECRET_PREFIX):], validate=True)
    except ValueError:
        raise ConfigError(field_name, f"a {SECRET_PREFIX} secret must be base64") from None


def secret_keys(field_name: str, secrets: Sequence[str]) -> list[bytes]:
    """The HMAC keys of ``secrets`` (``whsec_`` and base64, or plain text)."""
    return [_secret_bytes(field_name, s) for s in secrets]


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookConfig(HttpOptions):
    """One endpoint: ``url`` (https unless ``allow_http``), ``secret`` (``whsec_`` and
    base64, or plain text) plus ``previous_secrets`` still signed with while a rotation
    runs, extra ``headers``, the provider's name and ``limits`` (its breaker and rate);
    timeouts and pool as in :class:`~tidings.integrations.http.HttpOptions`."""

    url: str
    secret: str = field(repr=False)
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    headers: dict[str, str] = field(default_factory=dict)
    provider: str = "webhook"
    limits: ProviderLimits = field(default_factory=ProviderLimits)

    def __post_init__(self) -> None:
        self.check_url("url", self.url)
        _secret_bytes("secret", self.secret)
        secret_keys("previous_secrets", self.previous_secrets)
        self.check_http()
        check_headers(self.headers)

    def keys(self) -> list[bytes]:
        return [_secret_bytes("secret", self.secret),
                *secret_keys("previous_secrets", self.previous_secrets)]


def check_headers(headers: Any) -> None:
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigError("headers", "must map str to str")


def sign(keys: list[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per key, space-separated."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise ValidationError("payload", "is not UTF-8 text, which Standard Webhooks signs"
                              ) from None
    when = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(key).sign(message_id, when, text) for key in keys)


def verify(secret: str | Sequence[str], headers: dict[str, str], body: bytes, *,
           tolerance: float = 300, clock: Clock = SYSTEM_CLOCK) -> str:
    """Check a received webhook; returns its id. Raises :class:`WebhookSignatureError`.

    ``secret`` is the endpoint's secret, or several (the new and the old while a rotation
    runs): any one matching signature passes. ``headers`` are the request's (any case); a
    timestamp more than ``tolerance`` seconds from now is refused, so a captured request
    cannot be replayed later.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    message_id = lower.get("webhook-id", "")
    if not message_id:
        raise WebhookSignatureError("webhook-id", "missing")
    try:
        timestamp = int(lower.get("webhook-timestamp", ""))
    except ValueError:
        raise WebhookSignatureError("webhook-timestamp", "missing or not an integer") from None
    if abs(clock.time() - timestamp) > tolerance:
        raise WebhookSignatureError("webhook-timestamp", f"more than {tolerance:g}s from now")
    secrets = [secret] if isinstance(secret, str) else list(secret)
    try:
        expected = sign(secret_keys("secret", secrets), message_id, timestamp, body).split()
    except ValidationError:
        raise WebhookSignatureError("body", "is not UTF-8 text") from None
    offered = lower.get("webhook-signature", "").split()
    if not any(hmac.compare_digest(e, o) for e in expected for o in offered):
        raise WebhookSignatureError("webhook-signature", "no signature matches the secret")
    return message_id


def signed_request(message: Message, keys: list[bytes], clock: Clock,
                   extra: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of ``message``'s webhook; :class:`DeadLetter` if the payload
    cannot be signed."""
    body = encode_payload(message.payload)
    timestamp = int(clock.time())
    try:
        signature = sign(keys, message.id, timestamp, body.data)
    except ValidationError as exc:
        raise DeadLetter(f"webhook {exc}") from None
    headers = {**extra, "content-type": body.content_type, "webhook-id": message.id,
               "webhook-timestamp": str(timestamp), "webhook-signature": signature}
    if message.correlation_id:
        headers["x-correlation-id"] = message.correlation_id
    if "traceparent" in message.headers:
        headers["traceparent"] = message.headers["traceparent"]
    return body.data, headers


class WebhookConsumer(HttpChannel):
    """A tidings handler delivering each message to one endpoint (``install(queue)`` or
    ``queue.handler(consumer.handle)``); ``await consumer.close()`` when done."""

    def __init__(self, config: WebhookConfig, *, clock: Clock = SYSTEM_CLOCK,
                 client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config, clock=clock, client=client)
        self.config = config
        self.provider = config.provider
        self.limits = config.limits
        self._keys = config.keys()

    def __repr__(self) -> str:
        return f"<WebhookConsumer {self.config.url}>"

    async def handle(self, message: Message) -> None:
        """POST ``message``; returns on 2xx, else raises the outcome (see the module doc)."""
        body, headers = signed_request(message, self._keys, self.clock, self.config.headers)
        response = await self._client.post(self.config.url, content=body, headers=headers)
        self.outcome(response, "http")
