"""Local stand-ins for the providers a notification platform calls, for the example, the
tests and the bench: an SMTP relay (aiosmtpd), and one aiohttp server on a free port with a
Twilio-shaped SMS API, an FCM-HTTP-v1-shaped push API and webhook receivers.

Each can be told what to answer next (:class:`Reply`: succeed, fail with a status and the
provider's error code, throttle with ``Retry-After``, or hang) and records what it received
(:class:`Received`), and counts a repeated idempotency key instead of delivering twice::

    async with FakeProviders() as fake:
        fake.script("sms", Reply(429, retry_after=1), Reply(200))
        ...
        await fake.wait_for("sms", 1)
        print(fake.delivered("sms"))

Routes (names for :meth:`FakeProviders.script`): ``sms`` (``/2010-04-01/Accounts/{sid}/
Messages.json``: form POST, HTTP basic auth), ``push`` (``/v1/projects/{project}/
messages:send``: JSON, bearer token) and ``webhook`` (``/hooks/{subscriber}``: the signature
checked with the receiving side's ``verify`` when a secret is registered).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import ssl
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from tidings.integrations.webhook import WebhookSignatureError, verify

ROUTES = ("sms", "push", "webhook", "email")


@dataclass(frozen=True)
class Reply:
    """One scripted answer: ``status`` (200: success), the provider's ``code`` (Twilio's
    number, FCM's ``errorCode``, an SMTP reply for email), ``retry_after`` seconds, or
    ``hang`` (never answer, until the fake closes)."""

    status: int = 200
    code: str | int | None = None
    retry_after: float | None = None
    hang: bool = False


OK = Reply()


@dataclass
class Received:
    """One request as the fake provider saw it."""

    route: str
    headers: dict[str, str]
    body: Any  # the form (dict), the JSON, or the email text
    key: str  # the idempotency key the request carried ("" if none)
    answered: int = 0  # the status answered
    path: str = ""  # the URL path (HTTP)


@dataclass
class _Route:
    replies: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    delivered: dict[str, Received] = field(default_factory=dict)  # by idempotency key
    repeats: int = 0


class FakeProviders:
    """Every fake provider, started by ``async with`` (or :meth:`start`/:meth:`stop`)."""

    def __init__(self, *, sms_account: str = "AC0001", sms_token: str = "twilio-token",
                 push_token: str = "fcm-token", host: str = "127.0.0.1",
                 smtp_tls: ssl.SSLContext | None = None, smtp_implicit_tls: bool = False
                 ) -> None:
        self.sms_account, self.sms_token, self.push_token = sms_account, sms_token, push_token
        self.host = host
        # Given: the relay offers STARTTLS with it and requires it (or, with
        # smtp_implicit_tls, speaks TLS from the first byte, as on port 465).
        self.smtp_tls = smtp_tls
        self.smtp_implicit_tls = smtp_implicit_tls
        self.secrets: dict[str, str] = {}  # webhook subscriber -> the secret to verify with
        self.routes: dict[str, _Route] = {name: _Route() for name in ROUTES}
        self.http_url = self.smtp_host = ""
        self.smtp_port = 0
        self._changed = asyncio.Event()
        self._release = asyncio.Event()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._smtp: asyncio.Server | None = None
        self._sessions: list[SMTP] = []

    # -- control -----------------------------------------------------------------------

    def script(self, route: str, *replies: Reply) -> None:
        """Answer the next requests of ``route`` with ``replies``, then succeed again."""
        self.routes[route].replies.extend(replies)

    def received(self, route: str) -> list[Received]:
        return self.routes[route].received

    def delivered(self, route: str) -> list[Received]:
        """Requests that succeeded, once per idempotency key."""
        return list(self.routes[route].delivered.values())

    def repeats(self, route: str) -> int:
        """Successful requests whose idempotency key had already been delivered."""
        return self.routes[route].repeats

    async def wait_for(self, route: str, delivered: int, timeout: float = 20.0) -> None:
        """Until ``route`` has delivered ``delivered`` distinct messages."""
        async def loop() -> None:
            while len(self.routes[route].delivered) < delivered:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_received(self, route: str, count: int, timeout: float = 20.0) -> None:
        """Until ``route`` has received ``count`` requests, whatever it answered."""
        async def loop() -> None:
            while len(self.routes[route].received) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def drop_smtp_sessions(self) -> int:
        """Hang up every open SMTP session, as a relay does with idle ones; returns how many."""
        open_ones = [s for s in self._sessions if s.transport is not None
                     and not s.transport.is_closing()]
        for smtp in open_ones:
            assert smtp.transport is not None
            smtp.transport.close()
        self._sessions.clear()
        return len(open_ones)

    # -- life --------------------------------------------------------------------------

    async def start(self) -> FakeProviders:
        server = web.Application()
        server.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._sms)
        server.router.add_post("/v1/projects/{project}/messages:send", self._push)
        server.router.add_post("/hooks/{subscriber}", self._webhook)
        self._runner = web.AppRunner(server, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.http_url = f"http://{self.host}:{self._runner.addresses[0][1]}"
        loop = asyncio.get_running_loop()
        def session() -> SMTP:
            starttls = None if self.smtp_implicit_tls else self.smtp_tls
            smtp = SMTP(_SmtpHandler(self), hostname="fake-smtp", loop=loop,
                        tls_context=starttls, require_starttls=starttls is not None)
            self._sessions.append(smtp)
            return smtp

        self._smtp = await loop.create_server(
            session, self.host, 0, ssl=self.smtp_tls if self.smtp_implicit_tls else None)
        self.smtp_host, self.smtp_port = self.host, self._smtp.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeProviders:
        return await self.start()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # -- the providers -----------------------------------------------------------------

    async def _next(self, route: str, received: Received) -> Reply:
        """Record ``received`` and return what to answer (after hanging, if scripted)."""
        state = self.routes[route]
        reply = state.replies.pop(0) if state.replies else OK
        state.received.append(received)
        self._changed.set()
        if reply.hang:
            await self._release.wait()
        received.answered = reply.status
        if reply.status < 300:
            if received.key and received.key in state.delivered:
                state.repeats += 1
            else:
                state.delivered[received.key or f"#{len(state.received)}"] = received
            self._changed.set()
        return reply

    async def _sms(self, request: web.Request) -> web.Response:
        expected = base64.b64encode(f"{self.sms_account}:{self.sms_token}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"code": 20003, "message": "Authenticate",
                                      "status": 401}, status=401)
        form = dict(await request.post())
        got = Received("sms", dict(request.headers), form,
                       request.headers.get("Idempotency-Key", ""))
        reply = await self._next("sms", got)
        if reply.status < 300:
            return web.json_response({"sid": f"SM{next(self._ids):032d}", "status": "queued",
                                      "to": form.get("To"), "body": form.get("Body")},
                                     status=201)
        return web.json_response({"code": reply.code or 20500, "message": "scripted failure",
                                  "status": reply.status}, status=reply.status,
                                 headers=_retry_after(reply))

    async def _push(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.push_token}":
            return _fcm_error(401, "UNAUTHENTICATED", None)
        body = await request.json()
        message = body.get("message", {})
        got = Received("push", dict(request.headers), body,
                       str(message.get("data", {}).get("tidings_id", "")))
        reply = await self._next("push", got)
        if reply.status < 300:
            project = request.match_info["project"]
            return web.json_response({"name": f"projects/{project}/messages/{next(self._ids)}"})
        status_name = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                       503: "UNAVAILABLE"}.get(reply.status, "INTERNAL")
        return _fcm_error(reply.status, status_name, reply.code, _retry_after(reply))

    async def _webhook(self, request: web.Request) -> web.Response:
        subscriber = request.match_info["subscriber"]
        data = await request.read()
        headers = dict(request.headers)
        secret = self.secrets.get(subscriber)
        if secret is not None:
            try:
                verify(secret, headers, data)
            except WebhookSignatureError as exc:
                return web.json_response({"error": str(exc)}, status=401)
        got = Received("webhook", headers, data, request.headers.get("webhook-id", ""),
                       path=request.path)
        reply = await self._next("webhook", got)
        return web.Response(status=reply.status if reply.status != 200 else 204,
                            headers=_retry_after(reply))


def _retry_after(reply: Reply) -> dict[str, str]:
    return {} if reply.retry_after is None else {"Retry-After": f"{reply.retry_after:g}"}


def _fcm_error(status: int, status_name: str, code: object,
               headers: dict[str, str] | None = None) -> web.Response:
    details = [] if code is None else [{
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
    return web.json_response({"error": {"code": status, "message": "scripted failure",
                                        "status": status_name, "details": details}},
                             status=status, headers=headers or {})


class _SmtpHandler:
    """aiosmtpd's handler: records each message. A scripted reply with a ``code`` (such as
    ``"550 5.1.1 no such user"``) is the answer to RCPT; one with a ``status`` of 400 or
    more the answer to DATA (``Reply(451)``); ``hang`` holds the DATA."""

    def __init__(self, fake: FakeProviders) -> None:
        self.fake = fake

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        state = self.fake.routes["email"]
        if state.replies and state.replies[0].code is not None:
            reply = state.replies.pop(0)
            state.received.append(Received("email", {}, address, "", int(str(reply.code)[:3])))
            self.fake._changed.set()
            return str(reply.code)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        text = raw.decode("utf-8", "replace")
        key = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                    if line.lower().startswith("message-id:")), "")
        got = Received("email", {"from": str(envelope.mail_from),
                                 "to": ", ".join(envelope.rcpt_tos)}, text, key)
        reply = await self.fake._next("email", got)
        if reply.status >= 400:
            return f"{reply.status} scripted failure"
        return "250 Message accepted for delivery"
