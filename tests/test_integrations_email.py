"""The email consumer against a local aiosmtpd relay that records what it received."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from examples.platform.fake_providers import FakeProviders, Reply

from certs import Authority
from conftest import Recorder
from tidings import ConfigError, EventKind, Tidings
from tidings.integrations.email import EmailConfig, EmailConsumer

MAIL = {"to": "ada@example.org", "subject": "Welcome", "text": "Hello Ada"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviders]:
    async with FakeProviders() as providers:
        yield providers


def plain(fake: FakeProviders, **options: object) -> EmailConsumer:
    return EmailConsumer(EmailConfig(host=fake.smtp_host, port=fake.smtp_port,
                                     sender="noreply@example.com", tls="none",
                                     **options))  # type: ignore[arg-type]


async def test_an_email_is_sent_with_its_message_id_and_acked(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    mail = plain(fake)
    q = mail.install(app.queue("email"))
    msg_id = await q.publish({**MAIL, "html": "<p>Hello Ada</p>"}, correlation_id="c-1",
                             idempotency_key="welcome:ada")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await mail.close()
    [got] = fake.delivered("email")
    assert got.key == f"<{msg_id}@example.com>"
    assert got.headers == {"from": "noreply@example.com", "to": "ada@example.org"}
    assert "Subject: Welcome" in got.body and "X-Correlation-Id: c-1" in got.body
    assert "X-Tidings-Idempotency-Key: welcome:ada" in got.body
    assert "text/html" in got.body and "Hello Ada" in got.body


async def test_a_permanent_5xx_is_dead_lettered_at_once(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    fake.script("email", Reply(code="550 5.1.1 no such user"))
    mail = plain(fake)
    q = mail.install(app.queue("email", max_attempts=5))
    await q.publish(MAIL)
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    await mail.close()
    [dead] = await q.dlq.list()
    assert "550 5.1.1 no such user" in dead.reason
    assert recorder.counts[EventKind.RETRIED] == 0 and fake.delivered("email") == []


async def test_a_4xx_retries_and_the_retry_carries_the_same_message_id(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    fake.script("email", Reply(code="451 4.7.1 greylisted"), Reply(452))
    mail = plain(fake)
    q = mail.install(app.queue("email", backoff_base=0.01, backoff_cap=0.02))
    msg_id = await q.publish(MAIL)
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    await mail.close()
    first, second = recorder.of(EventKind.RETRIED)
    assert "451" in (first.reason or "") and "452" in (second.reason or "")
    refused_data, delivered = fake.received("email")[1:]
    assert refused_data.key == delivered.key == f"<{msg_id}@example.com>"
    assert len(fake.delivered("email")) == 1


async def test_tls_is_required_and_the_certificate_verified_by_default(
        app: Tidings, recorder: Recorder, tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    leaf = ca.issue("smtp")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert, leaf.key)
    async with FakeProviders(smtp_tls=context) as fake, FakeProviders() as plaintext:
        def relay(where: FakeProviders, **options: object) -> EmailConsumer:
            return EmailConsumer(EmailConfig(host=where.smtp_host, port=where.smtp_port,
                                             sender="noreply@example.com", timeout=5,
                                             **options))  # type: ignore[arg-type]
        trusted, untrusted, no_tls = (relay(fake, cert_bundle=str(ca.pair.cert)),
                                      relay(fake), relay(plaintext))
        for name, consumer in (("trusted", trusted), ("untrusted", untrusted),
                               ("no-tls", no_tls)):
            consumer.install(app.queue(name, max_attempts=1))
            await app.queue(name).publish(MAIL)
        async with app.worker():
            await recorder.wait_for(lambda: recorder.counts[EventKind.ACKED] == 1 and
                                    recorder.counts[EventKind.DEAD_LETTERED] == 2)
        for consumer in (trusted, untrusted, no_tls):
            await consumer.close()
    [acked] = recorder.of(EventKind.ACKED)
    assert acked.queue == "trusted" and len(fake.delivered("email")) == 1
    async with FakeProviders(smtp_tls=context, smtp_implicit_tls=True) as implicit:
        port465 = relay(implicit, tls="implicit", cert_bundle=str(ca.pair.cert))
        port465.install(app.queue("implicit"))
        await app.queue("implicit").publish(MAIL)
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, 2)
        await port465.close()
    assert len(implicit.delivered("email")) == 1
    errors = {e.queue: e.error or "" for e in recorder.of(EventKind.DEAD_LETTERED)}
    assert "CERTIFICATE_VERIFY_FAILED" in errors["untrusted"]
    assert "STARTTLS" in errors["no-tls"] and plaintext.delivered("email") == []


async def test_a_payload_that_cannot_be_an_email_is_dead_lettered(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    mail = plain(fake)
    q = mail.install(app.queue("email", max_attempts=5))
    await q.publish({"to": "not-an-address", "text": "x"})
    await q.publish({"to": "ada@example.org"})
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 2)
    await mail.close()
    reasons = sorted(d.reason for d in await q.dlq.list())
    assert "'to' must be an address" in reasons[0] and "needs 'text' or 'html'" in reasons[1]
    assert fake.received("email") == []


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"sender": "nobody"}, "sender"),
    ({"tls": "maybe"}, "tls"),
    ({"username": "u"}, "password"),
    ({"port": 0}, "port"),
    ({"max_connections": 0}, "max_connections"),
])
def test_bad_email_config_names_the_field(kwargs: dict[str, object], field: str) -> None:
    options: dict[str, object] = {"host": "smtp.example.com", "sender": "a@example.com",
                                  **kwargs}
    with pytest.raises(ConfigError) as caught:
        EmailConfig(**options)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_the_smtp_password_never_shows_in_reprs() -> None:
    config = EmailConfig(host="smtp.example.com", sender="a@example.com", username="u",
                         password="hunter2-secret")
    assert "hunter2-secret" not in repr(config) + repr(EmailConsumer(config))


async def test_a_session_the_relay_hung_up_is_replaced_without_a_retry(
        app: Tidings, recorder: Recorder, fake: FakeProviders) -> None:
    mail = plain(fake)
    q = mail.install(app.queue("email"))
    async with app.worker():
        await q.publish(MAIL)
        await recorder.wait_count(EventKind.ACKED, 1)
        assert fake.drop_smtp_sessions() == 1  # the relay times the idle session out
        await q.publish(MAIL)
        await recorder.wait_count(EventKind.ACKED, 2)
    await mail.close()
    assert recorder.counts[EventKind.RETRIED] == 0 and len(fake.delivered("email")) == 2
