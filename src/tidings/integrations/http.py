"""What an HTTP provider's answer means for a message: the one mapping every HTTP consumer
(webhooks, SMS, push) uses.

2xx: delivered. 429, 408, 425 and 5xx: the provider may take it later, so :class:`Retry`
after the ``Retry-After`` it sent (delta-seconds or an HTTP date, capped), else after the
queue's backoff. Any other status (4xx, 3xx) can never succeed: :class:`DeadLetter` at
once, with the status and the start of the answer as the reason. A provider adapter may
first read its own error codes (``permanent`` / ``transient``) and decide otherwise.

A 429 raises :class:`Throttled`, a Retry that a channel's circuit breaker does not count as
a failure: the provider is up, it only asks us to slow down.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from ..core.clock import Clock
from ..core.errors import ConfigError, DeadLetter, Retry
from .mapping import require_positive, require_text

RETRYABLE = frozenset({408, 425, 429})
BODY_IN_REASON = 200  # characters of the provider's answer kept in a dead-letter reason


class Throttled(Retry):
    """The provider answered 429: retry later; not a sign the provider is down."""


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


def is_retryable(status: int) -> bool:
    """Whether an HTTP status may succeed later (429, 408, 425, 5xx)."""
    return status in RETRYABLE or status >= 500


def raise_for_outcome(status: int, retry_after_header: str | None, text: str, *,
                      clock: Clock, max_retry_after: float, label: str = "http") -> None:
    """Nothing for 2xx; else raise :class:`Retry` (or :class:`Throttled`) or
    :class:`DeadLetter`, as the module doc says. ``label`` starts the reason."""
    if 200 <= status < 300:
        return
    if is_retryable(status):
        wait = retry_after(retry_after_header, clock)
        delay = None if wait is None else min(wait, max_retry_after)
        kind = Throttled if status == 429 else Retry
        raise kind(delay, f"{label} {status}")
    raise DeadLetter(f"{label} {status}: {text[:BODY_IN_REASON]}".rstrip(": "))


def client(timeout: float, connect_timeout: float, max_connections: int,
           **options: object) -> httpx.AsyncClient:
    """The httpx client a consumer makes when none is given: no redirects followed (a
    redirect is an answer, not a delivery), verification on (httpx's default)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        # As many kept alive as may be open: a pool that closes connections under load
        # pays a TCP handshake per request.
        limits=httpx.Limits(max_connections=max_connections,
                            max_keepalive_connections=max_connections),
        follow_redirects=False, **options)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpOptions:
    """What every HTTP consumer's config has: ``timeout`` bounds each read,
    ``connect_timeout`` the connect, ``max_connections`` the pool; a ``Retry-After``
    longer than ``max_retry_after`` seconds is cut to it; plain ``http://`` URLs only with
    ``allow_http`` (a local fake or test)."""

    timeout: float = 10.0
    connect_timeout: float = 5.0
    max_retry_after: float = 3600.0
    max_connections: int = 100
    allow_http: bool = False

    def check_http(self) -> None:
        for name in ("timeout", "connect_timeout", "max_retry_after"):
            require_positive(name, getattr(self, name))
        require_positive("max_connections", self.max_connections, integer=True)

    def check_url(self, field: str, url: str) -> str:
        """``url`` if it is https (or http with ``allow_http``) with a host."""
        parts = urlsplit(require_text(field, url))
        allowed = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in allowed or not parts.hostname:
            raise ConfigError(field, "must be an https:// URL with a host (plain http only "
                                     "with allow_http=True)")
        return url.rstrip("/")

    def client(self) -> httpx.AsyncClient:
        return client(self.timeout, self.connect_timeout, self.max_connections)
