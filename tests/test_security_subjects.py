"""Per-subject data keys: erasing a subject's key makes its messages unreadable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from conftest import Recorder
from test_security_encryption import every_value, ring, run_until
from tidings import EventKind, Message, Tidings, ValidationError
from tidings.security.encryption import Encryption
from tidings.security.keyring import Keyring


def encrypted(make_app: Callable[..., Tidings], keys: Keyring, *middleware: Any) -> Tidings:
    app = make_app(middleware=list(middleware))
    app.queue("email", encryption="aes-256-gcm")
    app.extension(Encryption).use(keys)
    return app


async def test_erasing_a_subject_shreds_its_messages_and_no_others(
        make_app: Callable[..., Tidings], recorder: Recorder, client: Redis) -> None:
    keys = ring("k1")
    producer = encrypted(make_app, keys)
    subjects = producer.extension(Encryption).subjects
    await subjects.prepare(["alice", "bob"])
    email = producer.queue("email")
    await email.publish({"to": "alice@example.com"}, headers={"subject": "alice"})
    await email.publish({"to": "bob@example.com"}, headers={"subject": "bob"})
    await email.publish({"to": "carol@example.com"})  # no subject: the keyring's key
    stored = await every_value(client, producer.settings.key_prefix)
    assert not [v for v in stored if v and b"@example.com" in v]
    assert await subjects.erase("alice") and not await subjects.erase("alice")

    worker_app = encrypted(make_app, keys, recorder)  # another process: nothing cached
    handled: list[Any] = []

    @worker_app.queue("email").handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload["to"])

    async with worker_app:
        await run_until(worker_app, recorder, lambda: len(handled) == 2
                        and recorder.counts[EventKind.DEAD_LETTERED] == 1)
        [dead] = await worker_app.queue("email").dlq.list()
    assert sorted(handled) == ["bob@example.com", "carol@example.com"]
    assert dead.reason == ("decryption failed: the data key of subject 'alice' is erased "
                           "(or was never made)")
    await producer.close()


async def test_a_subject_key_must_be_prepared_before_publishing(
        make_app: Callable[..., Tidings]) -> None:
    app = encrypted(make_app, ring("k1"))
    with pytest.raises(ValidationError) as info:
        await app.queue("email").publish("x", headers={"subject": "dave"})
    assert info.value.field == "headers" and "subjects.prepare" in str(info.value)


async def test_subject_keys_survive_a_rotation_once_rewrapped(
        make_app: Callable[..., Tidings], recorder: Recorder) -> None:
    old = ring("k1")
    producer = encrypted(make_app, old)
    await producer.extension(Encryption).subjects.prepare(["erin"])
    await producer.queue("email").publish("for erin", headers={"subject": "erin"})
    rotated = old.rotated("k2")
    producer.extension(Encryption).use(rotated)
    assert await producer.extension(Encryption).subjects.rewrap() == 1
    assert await producer.extension(Encryption).subjects.rewrap() == 0
    await producer.close()

    worker_app = encrypted(make_app, rotated.without("k1"), recorder)  # k1 retired
    handled: list[Any] = []

    @worker_app.queue("email").handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    async with worker_app:
        await run_until(worker_app, recorder, lambda: handled == ["for erin"])


def test_cli_erases_a_subject_key_and_audits_it(cli_env: dict[str, str]) -> None:
    from conftest import tidings, with_app
    from tidings.security.audit import Audit

    async def prepare(app: Tidings) -> None:
        app.extension(Encryption).use(ring("k1"))
        await app.extension(Encryption).subjects.prepare(["gina"])

    with_app(cli_env, prepare)
    assert tidings(cli_env, "keys", "erase-subject", "gina").stdout == (
        "erased the data key of gina\n")
    missing = tidings(cli_env, "keys", "erase-subject", "gina", code=1)
    assert "no data key of subject 'gina'" in missing.stderr

    async def entries(app: Tidings) -> list[Any]:
        return await app.extension(Audit).entries()

    log = [(e.action, e.target, e.outcome) for e in with_app(cli_env, entries)]
    assert log[:2] == [("keys.erase_subject", "gina", "allowed"),
                       ("keys.erase_subject", "gina", "done")]
    assert log[-1] == ("keys.erase_subject", "gina", "failed")
