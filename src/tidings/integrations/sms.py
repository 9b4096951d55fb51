"""An SMS channel consumer shaped like Twilio's Messages API (httpx, always installed).

Each message is one SMS: payload ``{"to": "+4912345678", "body": "..."}`` (``from`` or the
config's ``sender`` / ``messaging_service_sid``). It is a form POST to
``{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`` with HTTP basic auth
(account SID, auth token); the tidings idempotency key (the publisher's, else the message
id) goes as ``Idempotency-Key``, the same on every retry.

Outcomes follow the shared HTTP mapping (:mod:`tidings.integrations.http`), read with
Twilio's error ``code`` first: the codes in :data:`PERMANENT_CODES` (an invalid or
unreachable number, a recipient who opted out, a body too long) are dead-lettered at once,
whatever the status; 401/403 (our credentials, not the message) retry, so a bad token opens
the provider's breaker instead of dead-lettering every message; otherwise 2xx acks, 429 and
5xx retry after ``Retry-After``, any other 4xx is dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from ..core.clock import SYSTEM_CLOCK, Clock
from ..core.errors import ConfigError, DeadLetter, Retry
from ..core.message import Message
from .channel import HttpChannel, ProviderLimits, idempotency_key
from .http import BODY_IN_REASON, HttpOptions
from .mapping import require_text

# Twilio error codes that no retry can fix (twilio.com/docs/api/errors).
PERMANENT_CODES = frozenset({
    21211,  # invalid 'To' phone number
    21214,  # 'To' number cannot be reached
    21408,  # permission to send to this region not enabled
    21610,  # the recipient replied STOP (unsubscribed)
    21612,  # 'To' not reachable via this 'From'
    21614,  # 'To' is not a mobile number
    21617,  # the body exceeds 1600 characters
})
CREDENTIALS = frozenset({401, 403})


@dataclass(frozen=True, slots=True, kw_only=True)
class TwilioConfig(HttpOptions):
    """A Twilio account: ``account_sid``, ``auth_token`` (never shown), ``sender`` (a From
    number) or ``messaging_service_sid``, ``base_url``, ``status_callback`` (a URL Twilio
    reports delivery to), and the provider's name and ``limits``."""

    account_sid: str
    auth_token: str = field(repr=False)
    sender: str | None = None
    messaging_service_sid: str | None = None
    base_url: str = "https://api.twilio.com"
    status_callback: str | None = None
    provider: str = "twilio"
    limits: ProviderLimits = field(default_factory=ProviderLimits)

    def __post_init__(self) -> None:
        require_text("account_sid", self.account_sid)
        require_text("auth_token", self.auth_token)
        if self.sender is None and self.messaging_service_sid is None:
            raise ConfigError("sender", "set sender or messaging_service_sid")
        self.check_url("base_url", self.base_url)
        self.check_http()
        require_text("provider", self.provider)

    @property
    def messages_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Messages.json"


def sms_form(message: Message, config: TwilioConfig) -> dict[str, str]:
    """The form Twilio is sent for ``message``; :class:`DeadLetter` if it cannot be an SMS."""
    payload = message.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("to"), str) \
            or not isinstance(payload.get("body"), str) or not payload["body"]:
        raise DeadLetter("sms payload must be an object with 'to' and a non-empty 'body'")
    form = {"To": payload["to"], "Body": payload["body"]}
    sender = payload.get("from") or config.sender
    if sender:
        form["From"] = str(sender)
    else:
        form["MessagingServiceSid"] = str(config.messaging_service_sid)
    if config.status_callback:
        form["StatusCallback"] = config.status_callback
    return form


class TwilioSms(HttpChannel):
    """A tidings handler sending each message as one SMS; ``install(queue)`` or
    ``queue.handler(consumer.handle)``; ``await consumer.close()`` when done."""

    def __init__(self, config: TwilioConfig, *, clock: Clock = SYSTEM_CLOCK,
                 client: httpx.AsyncClient | None = None) -> None:
        super().__init__(config, clock=clock, client=client)
        self.config = config
        self.provider = config.provider
        self.limits = config.limits
        self._auth = httpx.BasicAuth(config.account_sid, config.auth_token)

    def __repr__(self) -> str:
        return f"<TwilioSms {self.config.account_sid}>"

    async def handle(self, message: Message) -> None:
        """Send ``message``; returns once Twilio accepted it (see the module doc)."""
        form = sms_form(message, self.config)
        response = await self._client.post(
            self.config.messages_url, data=form, auth=self._auth,
            headers={"Idempotency-Key": idempotency_key(message)})
        if response.is_success:
            return
        code, text = _error(response)
        if code is not None:
            text = f"code {code}: {text}"
        if code in PERMANENT_CODES:
            raise DeadLetter(f"twilio {response.status_code}: {text}")
        if response.status_code in CREDENTIALS:
            raise Retry(None, f"twilio {response.status_code}: credentials refused")
        self.outcome(response, "twilio", text)


def _error(response: httpx.Response) -> tuple[int | None, str]:
    """Twilio's error ``code`` and ``message`` from an error answer (None, text if not JSON)."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:BODY_IN_REASON]
    code = body.get("code") if isinstance(body, dict) else None
    message = body.get("message", "") if isinstance(body, dict) else ""
    return (code if isinstance(code, int) else None), str(message)[:BODY_IN_REASON]
