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

from email.utils import parsedate_to_datetime

import httpx

from ..core.clock import Clock
from ..core.errors import DeadLetter, Retry

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


def raise_for_response(response: httpx.Response, *, clock: Clock, max_retry_after: float,
                       label: str = "http") -> None:
    """:func:`raise_for_outcome` for an httpx response."""
    raise_for_outcome(response.status_code, response.headers.get("retry-after"),
                      response.text, clock=clock, max_retry_after=max_retry_after,
                      label=label)


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
