"""An email channel consumer: each message is one email, sent over SMTP with aiosmtplib
(``pip install 'tidings[email]'``).

The payload is ``{"to": addr | [addr, ...], "subject": str, "text": str, "html": str,
"from": addr, "reply_to": addr}`` (``to`` and one of ``text``/``html`` required; ``from``
defaults to the config's ``sender``). The ``Message-ID`` is made from the tidings message id,
the same on every retry, so a receiving system (and the sender's own outbox) can drop a
repeat; ``X-Tidings-Idempotency-Key`` carries the publisher's key when it set one.

TLS is on by default: ``tls="starttls"`` (required, not opportunistic) or ``"implicit"``
(port 465), with the server's certificate verified against ``cert_bundle`` or the system's
store; ``tls="none"`` (plaintext, a local relay or a test) must be asked for.

Outcomes: the server accepted the message: ack. A 5xx reply to the sender, a recipient or
the data can never succeed: dead letter. 4xx (greylisting, mailbox busy, too many
connections), a dropped connection or a timeout: retry through the queue's backoff (SMTP has
no Retry-After). Authentication or HELO refused, or no connection: the relay's fault, not
the message's: retry (and the provider's breaker counts it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Literal

import aiosmtplib

from ..core.errors import ConfigError, DeadLetter, Retry
from ..core.message import Message
from .channel import Channel, ProviderLimits
from .mapping import require_positive, require_text

TlsMode = Literal["starttls", "implicit", "none"]
TLS_MODES = ("starttls", "implicit", "none")


@dataclass(frozen=True, slots=True)
class EmailConfig:
    """An SMTP relay: ``host``/``port`` (587, or 465 with ``tls="implicit"``), ``username``
    and ``password`` (never shown), ``sender`` (the default From), ``tls`` and
    ``cert_bundle`` (a CA file; None: the system's), ``timeout`` per SMTP command,
    ``max_connections`` kept open to the relay, ``message_id_domain`` (default: the sender's
    domain), ``provider`` naming the breaker and rate limit, and their ``limits``."""

    host: str
    sender: str
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsMode = "starttls"
    cert_bundle: str | None = None
    timeout: float = 30.0
    max_connections: int = 4
    message_id_domain: str | None = None
    provider: str = "smtp"
    limits: ProviderLimits = field(default_factory=ProviderLimits)

    def __post_init__(self) -> None:
        require_text("host", self.host)
        if "@" not in require_text("sender", self.sender):
            raise ConfigError("sender", f"must be an email address, got {self.sender!r}")
        if self.tls not in TLS_MODES:
            raise ConfigError("tls", f"must be one of {', '.join(TLS_MODES)}, got {self.tls!r}")
        if self.port is not None:
            require_positive("port", self.port, integer=True)
        if (self.username is None) != (self.password is None):
            raise ConfigError("password", "username and password go together")
        require_positive("timeout", self.timeout)
        require_positive("max_connections", self.max_connections, integer=True)
        require_text("provider", self.provider)

    @property
    def domain(self) -> str:
        return self.message_id_domain or self.sender.rsplit("@", 1)[1]

    def smtp(self) -> aiosmtplib.SMTP:
        """A client for this relay (not connected)."""
        return aiosmtplib.SMTP(
            hostname=self.host, port=self.port or (465 if self.tls == "implicit" else 587),
            username=self.username, password=self.password, timeout=self.timeout,
            use_tls=self.tls == "implicit", start_tls=self.tls == "starttls",
            validate_certs=True, cert_bundle=self.cert_bundle)


def build_email(message: Message, config: EmailConfig) -> EmailMessage:
    """The email ``message`` asks for; :class:`DeadLetter` if its payload cannot be one."""
    payload = message.payload
    if not isinstance(payload, dict):
        raise DeadLetter("email payload must be an object with to, subject, text or html")
    to = payload.get("to")
    recipients = [to] if isinstance(to, str) else to
    if not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
        raise DeadLetter(f"email payload: 'to' must be an address or a list of them, got {to!r}")
    if not isinstance(payload.get("text"), str) and not isinstance(payload.get("html"), str):
        raise DeadLetter("email payload: needs 'text' or 'html'")
    email = EmailMessage()
    email["From"] = payload.get("from") or config.sender
    email["To"] = ", ".join(recipients)
    email["Subject"] = str(payload.get("subject", ""))
    email["Date"] = formatdate(message.created_at_ms / 1000, usegmt=True)
    email["Message-ID"] = f"<{message.id}@{config.domain}>"
    if payload.get("reply_to"):
        email["Reply-To"] = payload["reply_to"]
    if message.idempotency_key:
        email["X-Tidings-Idempotency-Key"] = message.idempotency_key
    if message.correlation_id:
        email["X-Correlation-Id"] = message.correlation_id
    if isinstance(payload.get("text"), str):
        email.set_content(payload["text"])
    if isinstance(payload.get("html"), str):
        if email.get_content_type() == "text/plain" and isinstance(payload.get("text"), str):
            email.add_alternative(payload["html"], subtype="html")
        else:
            email.set_content(payload["html"], subtype="html")
    return email


def raise_for_smtp(exc: aiosmtplib.SMTPException) -> None:
    """Map an aiosmtplib error to the message's outcome (see the module doc)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        if codes and all(code >= 500 for code in codes):
            raise DeadLetter(f"smtp refused every recipient: {detail}") from None
        raise Retry(None, f"smtp recipients refused for now: {detail}") from None
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPHeloError
                  | aiosmtplib.SMTPConnectError):
        raise Retry(None, f"smtp relay: {exc}") from None
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code >= 500:
            raise DeadLetter(f"smtp {exc.code}: {exc.message}") from None
        raise Retry(None, f"smtp {exc.code}: {exc.message}") from None
    raise Retry(None, f"smtp: {type(exc).__name__}: {exc}") from None


class EmailConsumer(Channel):
    """A tidings handler sending each message as one email; ``install(queue)`` or
    ``queue.handler(consumer.handle)``. Keeps up to ``max_connections`` SMTP sessions
    open and reuses them; ``await consumer.close()`` ends them."""

    def __init__(self, config: EmailConfig) -> None:
        self.config = config
        self.provider = config.provider
        self.limits = config.limits
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(config.max_connections)

    def __repr__(self) -> str:
        return f"<EmailConsumer {self.config.host} as {self.config.sender}>"

    async def handle(self, message: Message) -> None:
        """Send ``message``; returns once the relay accepted it (see the module doc)."""
        email = build_email(message, self.config)
        async with self._slots:
            reused = bool(self._idle)
            try:
                await self._send(email, self._idle.pop() if reused else self.config.smtp())
            except aiosmtplib.SMTPServerDisconnected:
                if not reused:
                    raise_for_smtp(aiosmtplib.SMTPServerDisconnected("relay hung up"))
                # An idle session the relay timed out: once more, on a fresh one.
                await self._send(email, self.config.smtp())

    async def _send(self, email: EmailMessage, smtp: aiosmtplib.SMTP) -> None:
        """Send on ``smtp`` and keep it for the next message; a failed session is closed
        and the failure raised as the message's outcome (a lost session as itself)."""
        try:
            if not smtp.is_connected:
                await smtp.connect()
            await smtp.send_message(email)
        except aiosmtplib.SMTPServerDisconnected:
            await _quietly_close(smtp)
            raise
        except aiosmtplib.SMTPException as exc:
            await _quietly_close(smtp)
            raise_for_smtp(exc)
        except BaseException:
            await _quietly_close(smtp)
            raise
        self._idle.append(smtp)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for smtp in idle:
            await _quietly_close(smtp)


async def _quietly_close(smtp: Any) -> None:
    """End a session that failed or is idle; a dead one cannot say goodbye, and need not."""
    if not smtp.is_connected:
        return
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
