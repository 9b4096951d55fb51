"""A push channel consumer shaped like Firebase Cloud Messaging's HTTP v1 API (httpx).

Each message is one push: payload ``{"token": device token, "title": str, "body": str,
"data": {str: str}}`` (or ``"topic"`` instead of ``"token"``). It is a JSON POST to
``{base_url}/v1/projects/{project_id}/messages:send`` with ``Authorization: Bearer`` and an
OAuth2 access token: a fixed ``token``, or ``token_provider`` (an async function, e.g. over
google-auth, which caches and refreshes the token) asked before each send. The idempotency key (the
publisher's, else the message id) goes in ``data.tidings_id``, so the app can drop a repeat.

Outcomes follow the shared HTTP mapping (:mod:`tidings.integrations.http`), read with FCM's
``errorCode`` first: ``UNREGISTERED`` (the app was uninstalled), ``INVALID_ARGUMENT`` and
``SENDER_ID_MISMATCH`` are dead-lettered at once; ``UNAVAILABLE``, ``INTERNAL`` and
``QUOTA_EXCEEDED`` retry after ``Retry-After``; 401/403 (our credentials) retry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import ConfigError, DeadLetter, Retry
from ..core.message import Message
from .channel import HttpChannel, ProviderLimits, idempotency_key
from .http import BODY_IN_REASON, HttpOptions, Throttled, retry_after
from .mapping import require_text

PERMANENT_CODES = frozenset({"UNREGISTERED", "INVALID_ARGUMENT", "SENDER_ID_MISMATCH"})
TRANSIENT_CODES = frozenset({"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED"})
CREDENTIALS = frozenset({401, 403})
TokenProvider = Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class FcmConfig(HttpOptions):
    """A Firebase project: ``project_id``, ``token`` (a bearer token, never shown) or
    ``token_provider``, ``base_url``, and the provider's name and ``limits``."""

    project_id: str
    token: str | None = field(default=None, repr=False)
    token_provider: TokenProvider | None = field(default=None, repr=False)
    base_url: str = "https://fcm.googleapis.com"
    provider: str = "fcm"
    limits: ProviderLimits = field(default_factory=ProviderLimits)

    def __post_init__(self) -> None:
        require_text("project_id", self.project_id)
        if (self.token is None) == (self.token_provider is None):
            raise ConfigError("token", "set exactly one of token and token_provider")
        if self.token is not None:
            require_text("token", self.token)
        self.check_url("base_url", self.base_url)
        self.check_http()
        require_text("provider", self.provider)

    @property
    def send_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v1/projects/{self.project_id}/messages:send"


def fcm_message(message: Message) -> dict[str, Any]:
    """The FCM v1 request body for ``message``; :class:`DeadLetter` if it cannot be one."""
    payload = message.payload
    if not isinstance(payload, dict):
        raise DeadLetter("push payload must be an object with token (or topic), title, body")
    target = {k: payload[k] for k in ("token", "topic") if isinstance(payload.get(k), str)}
    if len(target) != 1:
        raise DeadLetter("push payload: needs exactly one of 'token' and 'topic'")
    data = payload.get("data") or {}
    if not isinstance(data, dict):
        raise DeadLetter("push payload: 'data' must be an object")
    # FCM data values are strings.
    body: dict[str, Any] = {**target, "data": {**{str(k): str(v) for k, v in data.items()},
                                               "tidings_id": idempotency_key(message)}}
    notification = {k: str(payload[k]) for k in ("title", "body") if k in payload}
    if notification:
        body["notification"] = notification
    return {"message": body}


class FcmPush(HttpChannel):
    """A tidings handler sending each message as one push; ``install(queue)`` or
    ``queue.handler(consumer.handle)``; ``await consumer.close()`` when done."""

    def __init__(self, config: FcmConfig, *, clock: Clock = SYSTEM_CLOCK,
                 client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config, clock=clock, client=client)
        self.config = config
        self.provider = config.provider
        self.limits = config.limits

    def __repr__(self) -> str:
        return f"<FcmPush {self.config.project_id}>"

    async def _token(self) -> str:
        if self.config.token_provider is not None:
            return await self.config.token_provider()
        return str(self.config.token)

    async def handle(self, message: Message) -> None:
        """Send ``message``; returns once FCM accepted it (see the module doc)."""
        body = fcm_message(message)
        response = await self._client.post(
            self.config.send_url, json=body,
            headers={"Authorization": f"Bearer {await self._token()}"})
        if response.is_success:
            return
        status, code, text = response.status_code, *_error(response)
        reason = f"fcm {status}: {code or ''} {text}".rstrip()
        if code in PERMANENT_CODES:
            raise DeadLetter(reason)
        if status in CREDENTIALS:
            raise Retry(None, f"fcm {status}: credentials refused")
        if code in TRANSIENT_CODES and status < 500 and status != 429:
            wait = retry_after(response.headers.get("retry-after"), self.clock)
            delay = None if wait is None else min(wait, self.config.max_retry_after)
            raise (Throttled if code == "QUOTA_EXCEEDED" else Retry)(delay, f"fcm {status}")
        self.outcome(response, "fcm", f"{code or ''} {text}".strip())


def _error(response: httpx.Response) -> tuple[str | None, str]:
    """FCM's ``errorCode`` (from ``error.details``) and ``error.message``."""
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return None, response.text[:BODY_IN_REASON]
    if not isinstance(error, dict):
        return None, ""
    codes = [d.get("errorCode") for d in error.get("details") or () if isinstance(d, dict)]
    code = next((c for c in codes if isinstance(c, str)), None) or error.get("status")
    return (code if isinstance(code, str) else None), str(error.get("message", ""))[
        :BODY_IN_REASON]
