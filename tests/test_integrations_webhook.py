"""The webhook consumer against a local aiohttp endpoint that can answer anything, or hang."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web

from conftest import Recorder
from tidings import ConfigError, EventKind, Tidings
from tidings.core.clock import ManualClock
from tidings.integrations.webhook import (
    WebhookConfig,
    WebhookConsumer,
    WebhookSignatureError,
    retry_after,
    verify,
)

SECRET = "whsec_" + base64.b64encode(b"a-very-secret-key-of-32-bytes!!!").decode()
OLD_SECRET = "old-plain-secret"


@dataclass
class Endpoint:
    """A subscriber endpoint: answers each POST with the next scripted reply (then 200),
    records what it received; a reply of status 0 hangs until the test ends."""

    url: str = ""
    replies: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(({k.lower(): v for k, v in request.headers.items()},
                              await request.read()))
        status, headers = self.replies.pop(0) if self.replies else (200, {})
        if status == 0:
            await self.release.wait()
            status = 200
        return web.Response(status=status, headers=headers, text=f"answer {status}")


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    found = Endpoint()
    server = web.Application()
    server.router.add_post("/hook", found.handle)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # a free port
    await site.start()
    port = runner.addresses[0][1]
    found.url = f"http://127.0.0.1:{port}/hook"
    yield found
    found.release.set()
    await runner.cleanup()


def consumer_for(endpoint: Endpoint, **options: object) -> WebhookConsumer:
    config = WebhookConfig(url=endpoint.url, secret=SECRET, previous_secrets=(OLD_SECRET,),
                           allow_http=True, **options)  # type: ignore[arg-type]
    return WebhookConsumer(config)


async def test_a_delivered_webhook_is_signed_and_acked(
        app: Tidings, recorder: Recorder, endpoint: Endpoint) -> None:
    hook = consumer_for(endpoint)
    q = app.queue("webhooks")
    q.handler(hook.handle)
    msg_id = await q.publish({"event": "order.paid"}, correlation_id="corr-1",
                             headers={"traceparent": "00-a-b-01"})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await hook.close()
    [(headers, body)] = endpoint.received
    assert body == b'{"event":"order.paid"}'
    assert headers["content-type"] == "application/json"
    assert verify(SECRET, headers, body) == msg_id
    assert verify(OLD_SECRET, headers, body) == msg_id  # rotation: the old secret still works
    assert headers["x-correlation-id"] == "corr-1" and headers["traceparent"] == "00-a-b-01"


async def test_5xx_retries_after_the_retry_after_the_endpoint_sent(
        app: Tidings, recorder: Recorder, endpoint: Endpoint) -> None:
    endpoint.replies = [(503, {"Retry-After": "1"}), (429, {})]
    hook = consumer_for(endpoint)
    q = app.queue("webhooks", backoff_base=0.01, backoff_cap=0.02)
    q.handler(hook.handle)
    await q.publish({"n": 1})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await hook.close()
    first, second = recorder.of(EventKind.RETRIED)
    assert first.delay == 1.0 and first.reason == "http 503"
    assert "http 429" in (second.reason or "") and second.delay is not None and second.delay < 1
    assert len(endpoint.received) == 3
    ids = {headers["webhook-id"] for headers, _ in endpoint.received}
    assert len(ids) == 1  # the same id on every attempt: the receiver can drop repeats


async def test_a_4xx_is_dead_lettered_at_once_with_the_status(
        app: Tidings, recorder: Recorder, endpoint: Endpoint) -> None:
    endpoint.replies = [(410, {})]
    hook = consumer_for(endpoint)
    q = app.queue("webhooks", max_attempts=5)
    q.handler(hook.handle)
    msg_id = await q.publish({"n": 1})
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    await hook.close()
    [dead] = await q.dlq.list()
    assert dead.message_id == msg_id and dead.reason == "http 410: answer 410"
    assert recorder.counts[EventKind.RETRIED] == 0 and len(endpoint.received) == 1


async def test_an_endpoint_that_hangs_times_out_and_is_retried(
        app: Tidings, recorder: Recorder, endpoint: Endpoint) -> None:
    endpoint.replies = [(0, {})]  # hangs; the retry gets the default 200
    hook = consumer_for(endpoint, timeout=0.3, connect_timeout=0.3)
    q = app.queue("webhooks", backoff_base=0.01, backoff_cap=0.02)
    q.handler(hook.handle)
    await q.publish({"n": 1})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await hook.close()
    [retried] = recorder.of(EventKind.RETRIED)
    assert (retried.error or "").startswith("ReadTimeout")
    assert len(endpoint.received) == 2


async def test_a_refused_connection_retries_then_dead_letters(
        app: Tidings, recorder: Recorder) -> None:
    hook = WebhookConsumer(WebhookConfig(url="http://127.0.0.1:9/hook", secret=SECRET,
                                         allow_http=True))
    q = app.queue("webhooks", max_attempts=2, backoff_base=0.01)
    q.handler(hook.handle)
    await q.publish({"n": 1})
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    await hook.close()
    [dead] = await q.dlq.list()
    assert dead.reason == "max_attempts" and dead.error["type"] == "ConnectError"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    assert retry_after("120", clock) == 120.0
    assert retry_after("Thu, 01 Jan 2026 00:00:30 GMT", clock) == 30.0
    assert retry_after("Wed, 31 Dec 2025 00:00:00 GMT", clock) == 0.0
    assert retry_after("soon", clock) is None and retry_after(None, clock) is None


def test_verify_refuses_a_wrong_secret_a_stale_timestamp_and_missing_headers() -> None:
    clock = ManualClock(1_800_000_000)
    config = WebhookConfig(url="https://example.com/h", secret=SECRET)
    from tidings.integrations.webhook import sign

    body = b"{}"
    headers = {"webhook-id": "m1", "webhook-timestamp": str(1_800_000_000),
               "webhook-signature": sign(config.keys(), "m1", 1_800_000_000, body)}
    assert verify(SECRET, headers, body, clock=clock) == "m1"
    with pytest.raises(WebhookSignatureError) as caught:
        verify("another-secret", headers, body, clock=clock)
    assert caught.value.field == "webhook-signature"
    with pytest.raises(WebhookSignatureError):
        verify(SECRET, headers, b"{tampered}", clock=clock)
    clock.advance(301)
    with pytest.raises(WebhookSignatureError) as caught:
        verify(SECRET, headers, body, clock=clock)
    assert caught.value.field == "webhook-timestamp"
    with pytest.raises(WebhookSignatureError) as caught:
        verify(SECRET, {}, body, clock=clock)
    assert caught.value.field == "webhook-id"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"url": "http://example.com/h"}, "url"),  # plain http needs allow_http
    ({"url": "ftp://example.com/h", "allow_http": True}, "url"),
    ({"secret": ""}, "secret"),
    ({"secret": "whsec_***not base64"}, "secret"),
    ({"previous_secrets": ("",)}, "previous_secrets"),
    ({"timeout": 0}, "timeout"),
    ({"max_retry_after": -5}, "max_retry_after"),
])
def test_bad_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    options: dict[str, object] = {"url": "https://example.com/h", "secret": SECRET, **kwargs}
    with pytest.raises(ConfigError) as caught:
        WebhookConfig(**options)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_secrets_never_show_in_reprs() -> None:
    config = WebhookConfig(url="https://example.com/h", secret=SECRET,
                           previous_secrets=(OLD_SECRET,))
    shown = repr(config) + repr(WebhookConsumer(config))
    assert SECRET not in shown and OLD_SECRET not in shown


def test_signatures_interoperate_with_the_standardwebhooks_package() -> None:
    from standardwebhooks import Webhook

    from tidings.integrations.webhook import sign

    clock = ManualClock(1_800_000_000)
    body = b'{"event":"paid"}'
    when = datetime.fromtimestamp(1_800_000_000, UTC)
    theirs = Webhook(SECRET).sign("m1", when, body.decode())
    headers = {"webhook-id": "m1", "webhook-timestamp": "1800000000",
               "webhook-signature": theirs}
    assert verify([OLD_SECRET, SECRET], headers, body, clock=clock) == "m1"  # any secret
    config = WebhookConfig(url="https://example.com/h", secret=SECRET)
    assert sign(config.keys(), "m1", 1_800_000_000, body) == theirs
    with pytest.raises(WebhookSignatureError) as caught:
        verify(SECRET, {**headers, "webhook-signature": "v1,AAAA"}, b"\xff", clock=clock)
    assert caught.value.field == "body"
