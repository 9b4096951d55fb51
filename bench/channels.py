"""The channel consumers against their local fake providers (examples/platform), beside the
raw client doing the same requests in the same run: rows of ``python -m bench.integrations``,
or alone: ``python -m bench.channels [--quick]`` (bench/results/channels.json).

* ``email``: the email consumer (aiosmtplib, ``max_connections`` = the concurrency) vs
  aiosmtplib sessions sending the same emails, as many sessions as the concurrency.
* ``sms`` / ``push``: the Twilio- / FCM-shaped consumers vs httpx posting the same form /
  JSON with the same auth.
* ``webhook_subscribers``: the per-subscriber webhook consumer (registry look-up, signing,
  per-endpoint breaker) vs httpx posting the same bodies.

Each consumer runs behind what ``install`` adds (the provider's breaker; no rate limit).
``msg_s``: N messages drained at ``--channel-concurrency`` (default 8), median of the
rounds. ``added_ms``: at concurrency 1, (consumer seconds - raw seconds) / messages: what
tidings adds to each message's trip (fetch, handler, ack) beside the request itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
from examples.platform.fake_providers import FakeProviders

from tidings import Tidings
from tidings.integrations.channel import Channel
from tidings.integrations.email import EmailConfig, EmailConsumer
from tidings.integrations.push import FcmConfig, FcmPush
from tidings.integrations.sms import TwilioConfig, TwilioSms
from tidings.integrations.webhook_endpoints import (
    Endpoint,
    EndpointRegistry,
    SubscriberWebhooks,
    SubscriberWebhooksConfig,
)

from .integrations import Acks, bounded, drop
from .stats import RESULTS, median, ratio, rounded

SECRET = "whsec_" + base64.b64encode(b"bench-webhook-secret-of-32-bytes").decode()
Side = Callable[[int, int], Awaitable[float]]  # (messages, concurrency) -> seconds
Make = Callable[[Tidings], Awaitable[Channel]]


async def through_channel(url: str, n: int, concurrency: int, make: Make,
                          payload: dict[str, Any]) -> float:
    """Seconds for a worker to drain n messages through the consumer ``make`` builds."""
    prefix, acks = f"bench{uuid.uuid4().hex[:8]}", Acks(n)
    app = Tidings(url, key_prefix=prefix, middleware=[acks])
    try:
        async with app:
            consumer = await make(app)
            q = consumer.install(app.queue("out"), concurrency=concurrency)
            await q.publish_many([payload] * n)
            start = time.perf_counter()
            try:
                async with app.worker(concurrency=concurrency):
                    await asyncio.wait_for(acks.done.wait(), 600)
                return time.perf_counter() - start
            finally:
                await consumer.close()
    finally:
        await drop(url, prefix)


MAIL = {"to": "ada@example.org", "subject": "Welcome", "text": "Hello Ada"}
SMS = {"to": "+4915100000001", "body": "Order 42 has shipped"}
PUSH = {"token": "dev-ada", "title": "Order 42", "body": "Your order is shipped"}
HOOK = {"order_id": 42, "status": "shipped", "subscriber": "acme"}


def consumer_side(url: str, make: Callable[[Tidings, int], Awaitable[Channel]],
                  payload: dict[str, Any]) -> Side:
    async def side(n: int, c: int) -> float:
        return await through_channel(url, n, c, lambda app: make(app, c), payload)

    return side


def email_sides(url: str, fake: FakeProviders) -> tuple[Side, Side]:
    async def make(app: Tidings, c: int) -> Channel:
        return EmailConsumer(EmailConfig(host=fake.smtp_host, port=fake.smtp_port,
                                         sender="noreply@shop.example", tls="none",
                                         max_connections=c))

    async def raw(n: int, c: int) -> float:
        free: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for _ in range(c):
            session = aiosmtplib.SMTP(hostname=fake.smtp_host, port=fake.smtp_port,
                                      start_tls=False)
            await session.connect()
            free.put_nowait(session)

        async def one(i: int) -> None:
            email = EmailMessage()
            email["From"], email["To"], email["Subject"] = ("noreply@shop.example",
                                                            MAIL["to"], MAIL["subject"])
            email["Message-ID"] = f"<raw-{i}-{uuid.uuid4().hex}@shop.example>"
            email.set_content(MAIL["text"])
            session = await free.get()
            await session.send_message(email)
            free.put_nowait(session)

        try:
            return await bounded(n, c, one)
        finally:
            while not free.empty():
                await free.get_nowait().quit()

    return consumer_side(url, make, MAIL), raw


def sms_sides(url: str, fake: FakeProviders) -> tuple[Side, Side]:
    async def make(app: Tidings, c: int) -> Channel:
        return TwilioSms(TwilioConfig(account_sid=fake.sms_account, auth_token=fake.sms_token,
                                      sender="+15005550006", base_url=fake.http_url,
                                      allow_http=True))

    async def raw(n: int, c: int) -> float:
        target = f"{fake.http_url}/2010-04-01/Accounts/{fake.sms_account}/Messages.json"
        auth = httpx.BasicAuth(fake.sms_account, fake.sms_token)
        form = {"To": SMS["to"], "Body": SMS["body"], "From": "+15005550006"}
        async with _client() as client:
            return await bounded(n, c, lambda i: client.post(
                target, data=form, auth=auth, headers={"Idempotency-Key": f"raw-{i}"}))

    return consumer_side(url, make, SMS), raw


def push_sides(url: str, fake: FakeProviders) -> tuple[Side, Side]:
    async def make(app: Tidings, c: int) -> Channel:
        return FcmPush(FcmConfig(project_id="shop", token=fake.push_token,
                                 base_url=fake.http_url, allow_http=True))

    async def raw(n: int, c: int) -> float:
        target = f"{fake.http_url}/v1/projects/shop/messages:send"
        auth = {"Authorization": f"Bearer {fake.push_token}"}
        async with _client() as client:
            return await bounded(n, c, lambda i: client.post(target, headers=auth, json={
                "message": {"token": PUSH["token"], "data": {"tidings_id": f"raw-{i}"},
                            "notification": {"title": PUSH["title"], "body": PUSH["body"]}}}))

    return consumer_side(url, make, PUSH), raw


def webhook_sides(url: str, fake: FakeProviders) -> tuple[Side, Side]:
    async def make(app: Tidings, c: int) -> Channel:
        registry = EndpointRegistry(app)
        await registry.put(Endpoint("acme", f"{fake.http_url}/hooks/acme", SECRET),
                           allow_http=True)
        return SubscriberWebhooks(registry, SubscriberWebhooksConfig(allow_http=True))

    async def raw(n: int, c: int) -> float:
        body = json.dumps(HOOK).encode()
        async with _client() as client:
            return await bounded(n, c, lambda i: client.post(
                f"{fake.http_url}/hooks/acme", content=body,
                headers={"content-type": "application/json", "webhook-id": f"raw-{i}"}))

    return consumer_side(url, make, HOOK), raw


def sides(url: str, fake: FakeProviders) -> dict[str, tuple[Side, Side]]:
    return {"email": email_sides(url, fake), "sms": sms_sides(url, fake),
            "push": push_sides(url, fake), "webhook_subscribers": webhook_sides(url, fake)}


def _client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    return httpx.AsyncClient(limits=limits)


async def measure(consumer: Side, raw: Side, n: int, concurrency: int, rounds: int,
                  latency_n: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"consumer": [], "raw": []}
    alone: dict[str, list[float]] = {"consumer": [], "raw": []}
    for r in range(rounds):
        order = [("consumer", consumer), ("raw", raw)]
        for name, side in order if r % 2 == 0 else order[::-1]:
            times[name].append(await side(n, concurrency))
            alone[name].append(await side(latency_n, 1))
    rate, raw_rate = n / median(times["consumer"]), n / median(times["raw"])
    added = (median(alone["consumer"]) - median(alone["raw"])) / latency_n
    return {"messages": n, "consumer_msg_s": round(rate), "raw_msg_s": round(raw_rate),
            "consumer_vs_raw": rounded(ratio(rate, raw_rate)),
            "added_ms": rounded(added * 1000, 2)}


async def channel_rows(url: str, n: int, concurrency: int, rounds: int) -> dict[str, Any]:
    """Every channel row, against one set of fake providers."""
    rows: dict[str, Any] = {"channel_concurrency": concurrency}
    async with FakeProviders() as fake:
        for name, (consumer, raw) in sides(url, fake).items():
            rows[name] = await measure(consumer, raw, n, concurrency, rounds,
                                       max(50, n // 20))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.channels", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--channel-concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="300 messages, one round")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.messages, parsed.rounds = 300, 1
    out = asyncio.run(channel_rows(parsed.redis_url, parsed.messages,
                                   parsed.channel_concurrency, parsed.rounds))
    text = json.dumps(out, indent=2)
    print(text)
    (RESULTS / "channels.json").write_text(text + "\n")
