"""A webhook channel consumer: POST each message to a subscriber's URL, signed.

The signature follows the Standard Webhooks scheme (standardwebhooks.com): headers
``webhook-id`` (the tidings message id, the same on every retry, so the receiver can drop
repeats), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature``: ``v1,`` and the
base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` under the secret, one per secret while
secrets are rotated. :func:`verify` is the receiving side's check.

What the endpoint answers decides the outcome: 2xx acks; 429, 408 and 5xx retry after the
``Retry-After`` the endpoint sent (capped), else after the queue's backoff; a timeout or a
connection error retries through the queue's policy; any other status (4xx, 3xx) can never
succeed and is dead-lettered at once with the status as its reason::

    hook = WebhookConsumer(WebhookConfig(url="https://example.com/hooks", secret=secret))
    app.queue("webhooks", max_attempts=8).handler(hook.handle)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import ConfigError, DeadLetter, Retry, ValidationError
from ..core.message import Message
from .mapping import encode_payload, require_positive, require_text

RETRYABLE = frozenset({408, 425, 429})
SECRET_PREFIX = "whsec_"
BODY_IN_REASON = 200  # characters of the endpoint's answer kept in a dead-letter reason


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


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One endpoint: ``url`` (https unless ``allow_http``), ``secret`` (``whsec_`` and
    base64, or plain text) plus ``previous_secrets`` still signed with while a rotation
    runs; ``timeout`` bounds each read, ``connect_timeout`` the connect; ``max_connections``
    the pool; a
    ``Retry-After`` longer than ``max_retry_after`` seconds is cut to it."""

    url: str
    secret: str = field(repr=False)
    previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    timeout: float = 10.0
    connect_timeout: float = 5.0
    max_retry_after: float = 3600.0
    max_connections: int = 100
    allow_http: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(require_text("url", self.url))
        allowed = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in allowed or not parts.hostname:
            raise ConfigError("url", "must be an https:// URL with a host (plain http only "
                              "with allow_http=True)")
        _secret_bytes("secret", self.secret)
        for old in self.previous_secrets:
            _secret_bytes("previous_secrets", old)
        for name in ("timeout", "connect_timeout", "max_retry_after"):
            require_positive(name, getattr(self, name))
        require_positive("max_connections", self.max_connections, integer=True)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()):
            raise ConfigError("headers", "must map str to str")

    def keys(self) -> list[bytes]:
        return [_secret_bytes("secret", s) for s in (self.secret, *self.previous_secrets)]


def sign(keys: list[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per key, space-separated."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys)


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance: float = 300,
           clock: Clock = SYSTEM_CLOCK) -> str:
    """Check a received webhook; returns its id. Raises :class:`WebhookSignatureError`.

    ``headers`` are the request's (any case); a timestamp more than ``tolerance`` seconds
    from now is refused, so a captured request cannot be replayed later.
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
    expected = sign([_secret_bytes("secret", secret)], message_id, timestamp, body)
    offered = lower.get("webhook-signature", "").split()
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise WebhookSignatureError("webhook-signature", "no signature matches the secret")
    return message_id


def retry_after(value: str | None, clock: Clock) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock.time())


class WebhookConsumer:
    """A tidings handler delivering each message to one endpoint (register
    ``queue.handler(consumer.handle)``); ``await consumer.close()`` when done."""

    def __init__(self, config: WebhookConfig, *, clock: Clock = SYSTEM_CLOCK,
                 client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.clock = clock
        self._keys = config.keys()
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            # As many kept alive as may be open: a pool that closes connections under
            # load pays a TCP handshake per request.
            limits=httpx.Limits(max_connections=config.max_connections,
                                max_keepalive_connections=config.max_connections),
            follow_redirects=False)

    def __repr__(self) -> str:
        return f"<WebhookConsumer {self.config.url}>"

    async def handle(self, message: Message) -> None:
        """POST ``message``; returns on 2xx, else raises the outcome (see the module doc)."""
        body = encode_payload(message.payload)
        timestamp = int(self.clock.time())
        headers = {**self.config.headers, "content-type": body.content_type,
                   "webhook-id": message.id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(self._keys, message.id, timestamp, body.data)}
        if message.correlation_id:
            headers["x-correlation-id"] = message.correlation_id
        if "traceparent" in message.headers:
            headers["traceparent"] = message.headers["traceparent"]
        response = await self._client.post(self.config.url, content=body.data,
                                           headers=headers)
        self.outcome(response.status_code, response.headers.get("retry-after"),
                     response.text)

    def outcome(self, status: int, retry_after_header: str | None, text: str) -> None:
        """Nothing for 2xx; raise Retry or DeadLetter for the others."""
        if 200 <= status < 300:
            return
        if status in RETRYABLE or status >= 500:
            wait = retry_after(retry_after_header, self.clock)
            raise Retry(None if wait is None else min(wait, self.config.max_retry_after),
                        f"http {status}")
        raise DeadLetter(f"http {status}: {text[:BODY_IN_REASON]}".rstrip(": "))

    async def close(self) -> None:
        await self._client.aclose()
