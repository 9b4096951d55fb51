"""Webhooks per subscriber: the endpoint from the registry in Redis, a breaker per endpoint,
endpoints disabled after repeated failure and re-enabled by an operator; the signature
checked by the standardwebhooks package itself on the receiving side."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import orjson
import pytest
from examples.platform.fake_providers import FakeProviders, Reply
from standardwebhooks import Webhook
from typer.testing import CliRunner

from conftest import Recorder, new_prefix
from tidings import EventKind, Tidings
from tidings.cli.main import cli
from tidings.integrations.channel import ProviderLimits
from tidings.integrations.webhook_endpoints import (
    Endpoint,
    EndpointRegistry,
    SubscriberWebhooks,
    SubscriberWebhooksConfig,
)

SECRET = "whsec_" + base64.b64encode(b"acme-secret-of-thirty-two-bytes!").decode()
OTHER = "whsec_" + base64.b64encode(b"globex-secret-of-32-bytes-long!!").decode()
FAST = {"backoff_base": 0.01, "backoff_cap": 0.02}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as providers:
        providers.secrets.update(acme=SECRET, globex=OTHER)  # the receivers verify
        yield providers


async def registered(app: Tidings, fake: FakeProviders) -> EndpointRegistry:
    await app.connect()
    registry = EndpointRegistry(app)
    await registry.put(Endpoint("acme", f"{fake.http_url}/hooks/acme", SECRET),
                       allow_http=True)
    await registry.put(Endpoint("globex", f"{fake.http_url}/hooks/globex", OTHER),
                       allow_http=True)
    return registry


def hooks(registry: EndpointRegistry, **options: object) -> SubscriberWebhooks:
    return SubscriberWebhooks(registry, SubscriberWebhooksConfig(
        allow_http=True, **options))  # type: ignore[arg-type]


async def test_each_message_goes_to_its_subscribers_endpoint_signed_with_its_secret(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    consumer = hooks(await registered(app, fake))
    q = consumer.install(app.queue("webhooks"))
    by_header = await q.publish({"event": "paid"}, headers={"subscriber": "acme"})
    by_field = await q.publish({"event": "shipped", "subscriber": "globex"})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 2)
    await consumer.close()
    got = {r.headers["webhook-id"]: r for r in fake.delivered("webhook")}
    assert set(got) == {by_header, by_field}
    acme, globex = got[by_header], got[by_field]
    # The receiving side, with the package itself (and the other secret fails).
    assert Webhook(SECRET).verify(acme.body, acme.headers) == {"event": "paid"}
    assert Webhook(OTHER).verify(globex.body, globex.headers)["subscriber"] == "globex"
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(OTHER).verify(acme.body, acme.headers)


async def test_unknown_or_missing_subscribers_are_dead_lettered_never_posted(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    consumer = hooks(await registered(app, fake))
    q = consumer.install(app.queue("webhooks", max_attempts=5))
    await q.publish({"event": "x"}, headers={"subscriber": "initech"})
    await q.publish({"event": "x", "url": "http://169.254.169.254/"})
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 2)
    await consumer.close()
    reasons = sorted(d.reason for d in await q.dlq.list())
    assert "no endpoint registered for subscriber 'initech'" in reasons[0]
    assert "names no subscriber" in reasons[1]
    assert fake.received("webhook") == []


async def test_one_failing_endpoint_opens_its_own_breaker_and_holds_up_no_other(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    registry = await registered(app, fake)
    await registry.put(Endpoint("down", f"{fake.http_url}/hooks/down", SECRET),
                       allow_http=True)
    fake.script("webhook", Reply(503), Reply(503))
    consumer = hooks(registry, limits=ProviderLimits(failure_threshold=2, open_for=0.3))
    q = consumer.install(app.queue("webhooks", max_attempts=10, **FAST))
    await q.publish({"n": 0}, headers={"subscriber": "down"})
    async with app.worker(concurrency=1):
        await recorder.wait_count(EventKind.BREAKER_OPENED, 1)
        await q.publish_many([{"n": i, "subscriber": "acme"} for i in range(5)])
        await recorder.wait_count(EventKind.ACKED, 6)
    await consumer.close()
    [opened] = recorder.of(EventKind.BREAKER_OPENED)
    assert opened.reason == "breaker webhook:down: closed -> open"
    assert len(recorder.of(EventKind.SNOOZED)) >= 1  # held back without spending attempts
    assert len(fake.delivered("webhook")) == 6
    assert [e.reason for e in recorder.of(EventKind.BREAKER_CLOSED)] == [
        "breaker webhook:down: half_open -> closed"]


async def test_an_endpoint_is_disabled_after_repeated_failure_until_re_enabled(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    registry = await registered(app, fake)
    fake.script("webhook", Reply(500), Reply(429), Reply(500), Reply(500))
    consumer = hooks(registry, disable_after=3,
                     limits=ProviderLimits(failure_threshold=100))
    q = consumer.install(app.queue("webhooks", max_attempts=10, **FAST))
    await q.publish({"n": 1}, headers={"subscriber": "acme"})
    async with app.worker():
        # 500, 429 (not a failure), 500, 500: disabled; the 5th attempt finds it so.
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
        endpoint = await registry.get("acme")
        assert endpoint is not None and endpoint.failures == 3
        assert endpoint.disabled.startswith("3 failed attempts in a row, the last: http 500")
        await q.publish({"n": 2}, headers={"subscriber": "acme"})
        await recorder.wait_count(EventKind.DEAD_LETTERED, 2)
        assert await registry.enable("acme")
        await q.publish({"n": 3}, headers={"subscriber": "acme"})
        await recorder.wait_count(EventKind.ACKED, 1)
    await consumer.close()
    reasons = [d.reason for d in await q.dlq.list()]
    assert len(reasons) == 2 and all(
        r.startswith("webhook endpoint acme disabled: 3 failed") for r in reasons)
    assert len(fake.received("webhook")) == 5  # nothing was posted while disabled
    assert (await registry.get("acme")) == Endpoint(
        "acme", f"{fake.http_url}/hooks/acme", SECRET)  # enabled, no failures
    assert await registry.enable("nobody") is False


async def test_the_registry_refuses_plain_http_lists_removes_and_hides_secrets(
        app: Tidings, fake: FakeProviders) -> None:
    registry = await registered(app, fake)
    from tidings import ConfigError

    with pytest.raises(ConfigError) as caught:
        await registry.put(Endpoint("x", "http://example.com/hook", SECRET))
    assert caught.value.field == "url"
    listed = await registry.list()
    assert [e.subscriber for e in listed] == ["acme", "globex"]
    assert SECRET not in repr(listed) and await registry.remove("globex")
    assert [e.subscriber for e in await registry.list()] == ["acme"]


def test_the_cli_lists_endpoints_and_re_enables_a_disabled_one(redis_url: str) -> None:
    prefix = new_prefix()
    env = {"TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": prefix}
    app = Tidings(redis_url, key_prefix=prefix)

    async def setup() -> None:
        async with app:
            registry = EndpointRegistry(app)
            await registry.put(Endpoint("acme", "https://acme.example/hooks", SECRET))
            assert await registry.failed("acme", 1, "http 500")

    asyncio.run(setup())
    runner = CliRunner()
    listed = runner.invoke(cli, ["webhooks", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [row] = orjson.loads(listed.stdout)
    assert row["subscriber"] == "acme" and row["failures"] == 1
    assert row["disabled"].startswith("1 failed attempts in a row") and SECRET not in listed.stdout
    enabled = runner.invoke(cli, ["webhooks", "enable", "acme"], env=env)
    assert enabled.exit_code == 0 and "acme: enabled" in enabled.stdout
    [row] = orjson.loads(runner.invoke(cli, ["webhooks", "list", "--json"], env=env).stdout)
    assert row["disabled"] is None and row["failures"] == 0
    unknown = runner.invoke(cli, ["webhooks", "enable", "nobody"], env=env)
    assert unknown.exit_code != 0 and "no webhook endpoint for subscriber 'nobody'" in (
        unknown.output)


def test_install_puts_a_breaker_and_a_rate_limit_on_each_subscriber(app: Tidings) -> None:
    consumer = SubscriberWebhooks(EndpointRegistry(app), SubscriberWebhooksConfig(
        limits=ProviderLimits(rate="5/s", failure_threshold=3)))
    q = consumer.install(app.queue("webhooks"))
    guards = {type(g).__name__: g for g in app.flow.guards}
    breaker, rate = guards["KeyBreaker"], guards["KeyRateLimit"]
    assert breaker.name == "webhook" and breaker.breaker.failure_threshold == 3
    assert rate.name == "webhook-rate" and rate.limiter.rate == 5.0
    assert breaker.queues == rate.queues == [q.name] and q.handler_spec is not None
    assert app.flow.breakers == []  # no queue-wide breaker: one endpoint holds up no other
