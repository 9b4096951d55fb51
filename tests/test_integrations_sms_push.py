"""The SMS (Twilio-shaped) and push (FCM v1-shaped) consumers against the local fake
provider server, told to succeed, fail, throttle or hang."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from examples.platform.fake_providers import FakeProviders, Reply

from conftest import Recorder
from tidings import ConfigError, EventKind, Tidings
from tidings.integrations.channel import ProviderLimits
from tidings.integrations.push import FcmConfig, FcmPush
from tidings.integrations.sms import TwilioConfig, TwilioSms

SMS = {"to": "+4915112345678", "body": "Your code is 4242"}
PUSH = {"token": "device-1", "title": "Paid", "body": "Order 42 is paid", "data": {"n": 42}}
FAST = {"backoff_base": 0.01, "backoff_cap": 0.02}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as providers:
        yield providers


def twilio(fake: FakeProviders, **options: object) -> TwilioSms:
    settings: dict[str, object] = {"account_sid": fake.sms_account,
                                   "auth_token": fake.sms_token, "sender": "+15005550006",
                                   "base_url": fake.http_url, "allow_http": True, **options}
    return TwilioSms(TwilioConfig(**settings))  # type: ignore[arg-type]


def fcm(fake: FakeProviders, **options: object) -> FcmPush:
    settings: dict[str, object] = {"project_id": "demo", "token": fake.push_token,
                                   "base_url": fake.http_url, "allow_http": True, **options}
    return FcmPush(FcmConfig(**settings))  # type: ignore[arg-type]


async def test_an_sms_is_a_form_post_with_basic_auth_and_the_idempotency_key(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    sms = twilio(fake)
    q = sms.install(app.queue("sms"))
    await q.publish(SMS, idempotency_key="otp:ada:1")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await sms.close()
    [got] = fake.delivered("sms")
    assert got.body == {"To": SMS["to"], "Body": SMS["body"], "From": "+15005550006"}
    assert got.key == "otp:ada:1"
    auth = base64.b64encode(f"{fake.sms_account}:{fake.sms_token}".encode()).decode()
    assert got.headers["Authorization"] == f"Basic {auth}"


async def test_a_permanent_twilio_code_is_dead_lettered_at_once(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    fake.script("sms", Reply(400, code=21211))
    sms = twilio(fake)
    q = sms.install(app.queue("sms", max_attempts=5))
    await q.publish(SMS)
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    await sms.close()
    [dead] = await q.dlq.list()
    assert dead.reason == "twilio 400: code 21211: scripted failure"
    assert recorder.counts[EventKind.RETRIED] == 0


async def test_429_and_5xx_retry_honouring_retry_after_with_one_key(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    fake.script("sms", Reply(429, code=20429, retry_after=1), Reply(503))
    sms = twilio(fake)
    q = sms.install(app.queue("sms", **FAST))
    msg_id = await q.publish(SMS)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await sms.close()
    throttled, unavailable = recorder.of(EventKind.RETRIED)
    assert throttled.delay == 1.0 and throttled.reason == "twilio 429"
    assert "twilio 503" in (unavailable.reason or "") and (unavailable.delay or 0) < 1
    assert {r.key for r in fake.received("sms")} == {msg_id}  # the message id, each time
    assert len(fake.delivered("sms")) == 1


async def test_a_provider_that_hangs_times_out_and_is_retried(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    fake.script("sms", Reply(hang=True))
    sms = twilio(fake, timeout=0.3)
    q = sms.install(app.queue("sms", **FAST))
    await q.publish(SMS)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await sms.close()
    [retried] = recorder.of(EventKind.RETRIED)
    assert (retried.error or "").startswith("ReadTimeout")


async def test_refused_credentials_retry_instead_of_dead_lettering(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    sms = twilio(fake, auth_token="wrong")
    q = sms.install(app.queue("sms", max_attempts=2, **FAST))
    await q.publish(SMS)
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    await sms.close()
    [retried] = recorder.of(EventKind.RETRIED)
    assert "twilio 401: credentials refused" in (retried.reason or "")
    [dead] = await q.dlq.list()
    assert dead.reason == "max_attempts"


async def test_the_provider_breaker_opens_on_5xx_not_on_429_and_closes_after_a_probe(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    fake.script("sms", Reply(429), Reply(429), Reply(429), Reply(500), Reply(502))
    sms = twilio(fake, limits=ProviderLimits(failure_threshold=2, open_for=0.2,
                                             rate="1000/s"))
    q = sms.install(app.queue("sms", max_attempts=10, **FAST))
    await q.publish(SMS)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await sms.close()
    kinds = [e.kind for e in recorder.events if e.kind in (
        EventKind.RETRIED, EventKind.BREAKER_OPENED, EventKind.BREAKER_CLOSED)]
    opened = kinds.index(EventKind.BREAKER_OPENED)
    assert kinds[:opened].count(EventKind.RETRIED) >= 4  # 3 throttles + the first 5xx
    assert kinds.count(EventKind.BREAKER_OPENED) == 1 and EventKind.BREAKER_CLOSED in kinds
    names = sorted((type(g).__name__, g.name) for g in app.flow.guards
                   if getattr(g, "name", "").startswith("provider:"))
    assert names == [("BreakerGuard", "provider:twilio"), ("QueueRateLimit", "provider:twilio")]


async def test_a_push_is_json_with_a_bearer_token_and_the_tidings_id(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    asked: list[str] = []

    async def token() -> str:
        asked.append("token")
        return fake.push_token

    push = FcmPush(FcmConfig(project_id="demo", token_provider=token, base_url=fake.http_url,
                             allow_http=True))
    q = push.install(app.queue("push"))
    msg_id = await q.publish(PUSH)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await push.close()
    [got] = fake.delivered("push")
    assert got.body == {"message": {"token": "device-1",
                                    "data": {"n": "42", "tidings_id": msg_id},
                                    "notification": {"title": "Paid",
                                                     "body": "Order 42 is paid"}}}
    assert got.headers["Authorization"] == f"Bearer {fake.push_token}" and asked == ["token"]


async def test_unregistered_and_invalid_argument_are_dead_lettered_at_once(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    fake.script("push", Reply(404, code="UNREGISTERED"), Reply(400, code="INVALID_ARGUMENT"))
    push = fcm(fake)
    q = push.install(app.queue("push", max_attempts=5))
    await q.publish_many([PUSH, PUSH])
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 2)
    await push.close()
    reasons = sorted(d.reason for d in await q.dlq.list())
    assert reasons == ["fcm 400: INVALID_ARGUMENT scripted failure",
                       "fcm 404: UNREGISTERED scripted failure"]
    assert recorder.counts[EventKind.RETRIED] == 0


async def test_unavailable_and_quota_exceeded_retry_honouring_retry_after(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    fake.script("push", Reply(503, code="UNAVAILABLE", retry_after=1),
                Reply(429, code="QUOTA_EXCEEDED"))
    push = fcm(fake)
    q = push.install(app.queue("push", **FAST))
    await q.publish(PUSH)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await push.close()
    unavailable, quota = recorder.of(EventKind.RETRIED)
    assert unavailable.delay == 1.0 and unavailable.reason == "fcm 503"
    assert "fcm 429" in (quota.reason or "")
    assert len(fake.delivered("push")) == 1


@pytest.mark.parametrize(("make", "kwargs", "field"), [
    (TwilioConfig, {"account_sid": "AC1", "auth_token": "t"}, "sender"),
    (TwilioConfig, {"account_sid": "", "auth_token": "t", "sender": "+1"}, "account_sid"),
    (TwilioConfig, {"account_sid": "AC1", "auth_token": "t", "sender": "+1",
                    "base_url": "http://api.twilio.com"}, "base_url"),
    (TwilioConfig, {"account_sid": "AC1", "auth_token": "t", "sender": "+1", "timeout": 0},
     "timeout"),
    (FcmConfig, {"project_id": "p"}, "token"),
    (FcmConfig, {"project_id": "", "token": "t"}, "project_id"),
    (FcmConfig, {"project_id": "p", "token": "t", "max_connections": 0}, "max_connections"),
])
def test_bad_sms_and_push_config_names_the_field(
        make: type, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make(**kwargs)
    assert caught.value.field == field


def test_provider_tokens_never_show_in_reprs() -> None:
    sms = TwilioSms(TwilioConfig(account_sid="AC1", auth_token="twilio-secret", sender="+1"))
    push = FcmPush(FcmConfig(project_id="p", token="fcm-secret"))
    shown = repr(sms) + repr(sms.config) + repr(push) + repr(push.config)
    assert "twilio-secret" not in shown and "fcm-secret" not in shown
