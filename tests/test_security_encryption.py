"""Message-level encryption against the real server: ciphertext in Redis, plaintext in the
handler; retries, dead letters and replays; rotation; every way a ciphertext can be bad.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from redis.asyncio import Redis

from conftest import Recorder
from tidings import DeadLetter, EventKind, Message, Retry, Tidings
from tidings.security.keyring import Keyring, new_key

SECRET = {"to": "alice.secret@example.com", "code": "493817"}
PLAINTEXTS = (b"alice.secret@example.com", b"493817")


def ring(*ids: str) -> Keyring:
    return Keyring({key_id: new_key() for key_id in ids}, ids[0])


def encrypted_app(make_app: Callable[..., Tidings], keys: Keyring, *middleware: Any) -> Tidings:
    app = make_app(middleware=list(middleware))
    app.queue("email", encryption="aes-256-gcm", max_attempts=3)
    from tidings.security.encryption import Encryption

    app.extension(Encryption).use(keys)
    return app


async def every_value(client: Redis, prefix: str) -> list[bytes]:
    """Every byte string stored under ``prefix``: keys, fields, members and values."""
    found: list[bytes] = []
    async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        found.append(key)
        kind = (await client.type(key)).decode()
        if kind == "stream":
            for _, fields in await client.xrange(key):
                found.extend(b for kv in fields.items() for b in kv)
        elif kind == "hash":
            found.extend(b for kv in (await client.hgetall(key)).items() for b in kv)
        elif kind == "zset":
            found.extend(await client.zrange(key, 0, -1))
        elif kind == "list":
            found.extend(await client.lrange(key, 0, -1))
        elif kind == "set":
            found.extend(await client.smembers(key))
        elif kind == "string":
            found.append(await client.get(key))
    return found


async def run_until(app: Tidings, recorder: Recorder, predicate: Callable[[], bool]) -> None:
    worker = app.worker()
    task = asyncio.ensure_future(worker.run())
    try:
        await worker.started()
        await recorder.wait_for(predicate)
    finally:
        worker.stop()
        await task


async def test_handler_sees_plaintext_and_redis_never_does_through_retry_dlq_replay(
        make_app: Callable[..., Tidings], recorder: Recorder, client: Redis) -> None:
    app = encrypted_app(make_app, ring("k1"), recorder)
    seen: list[tuple[Any, int]] = []

    @app.queue("email").handler
    async def handle(msg: Message) -> None:
        seen.append((msg.payload, msg.attempts))
        if msg.attempts == 0:
            raise Retry(delay=0.01)  # retried: written back to Redis
        if len(seen) == 2:
            raise DeadLetter("provider said no")  # dead-lettered as ciphertext

    async with app:
        await app.queue("email").publish(SECRET, headers={"tenant": "acme"})
        await run_until(app, recorder, lambda: recorder.counts[EventKind.DEAD_LETTERED] == 1)
        values = await every_value(client, app.settings.key_prefix)
        dead = await app.queue("email").dlq.list()
        assert [e.message.headers["enc"] for e in dead if e.message] == ["aes-256-gcm"]
        assert await app.queue("email").dlq.replay() == 1
        await run_until(app, recorder, lambda: len(seen) == 3)
        values += await every_value(client, app.settings.key_prefix)
    assert seen == [(SECRET, 0), (SECRET, 1), (SECRET, 0)]
    assert values and not [v for v in values for p in PLAINTEXTS if p in (v or b"")]


async def test_rotation_new_key_encrypts_old_messages_stay_readable(
        make_app: Callable[..., Tidings], recorder: Recorder, client: Redis) -> None:
    old = ring("k1")
    app = encrypted_app(make_app, old, recorder)
    handled: list[Any] = []

    @app.queue("email").handler
    async def handle(msg: Message) -> None:
        handled.append((msg.payload, msg.headers["enc-key"]))

    async with app:
        await app.queue("email").publish("before")
        rotated = old.rotated("k2")
        from tidings.security.encryption import Encryption

        app.extension(Encryption).use(rotated)
        await app.queue("email").publish("after")
        await run_until(app, recorder, lambda: len(handled) == 2)
    assert sorted(handled) == [("after", "k2"), ("before", "k1")]
    assert rotated.active_id == "k2" and set(rotated.ids) == {"k1", "k2"}


async def _rewrite_lane(client: Redis, lane: str, change: Callable[[list[dict[str, Any]]],
                                                                   None]) -> None:
    """Decode every envelope of ``lane``, let ``change`` alter them, write them back."""
    entries = await client.xrange(lane)
    docs = [msgpack.unpackb(fields[b"m"], raw=False) for _, fields in entries]
    change(docs)
    await client.xdel(lane, *[sid for sid, _ in entries])
    for (_, fields), doc in zip(entries, docs, strict=True):
        await client.xadd(lane, {**fields, b"m": msgpack.packb(doc, use_bin_type=True)})


def _tamper(docs: list[dict[str, Any]]) -> None:
    docs[0]["p"] = docs[0]["p"][:-1] + bytes([docs[0]["p"][-1] ^ 1])
    docs[1]["h"]["enc-key"] = "k2"  # a wrong key id (one the ring has)
    docs[2]["p"], docs[3]["p"] = docs[3]["p"], docs[2]["p"]  # ciphertexts moved
    docs[4]["h"]["enc-key"] = "gone"  # a key the ring does not have
    docs[5]["h"] = {}  # written by a producer without encryption
    docs[5]["p"] = "plain"


async def test_bad_ciphertexts_are_dead_lettered_with_a_reason_and_the_worker_goes_on(
        make_app: Callable[..., Tidings], recorder: Recorder, client: Redis) -> None:
    keys = ring("k1", "k2")
    app = encrypted_app(make_app, keys, recorder)
    handled: list[Any] = []

    @app.queue("email").handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    async with app:
        email = app.queue("email")
        await email.publish_many([f"m{i}" for i in range(6)])
        await _rewrite_lane(client, email.keys.normal, _tamper)
        await email.publish("good")
        await run_until(app, recorder, lambda: recorder.counts[EventKind.DEAD_LETTERED] == 6
                        and handled == ["good"])
        reasons = sorted(e.reason for e in await email.dlq.list())
    assert handled == ["good"]
    assert sum("authentication failed" in r for r in reasons) == 4  # tampered, key id, moved
    assert sum("'gone' is not in the keyring" in r for r in reasons) == 1
    assert sum("not encrypted" in r for r in reasons) == 1
    assert all(r.startswith("decryption failed: ") for r in reasons)


async def test_keys_and_plaintext_are_never_logged(
        make_app: Callable[..., Tidings], recorder: Recorder,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keys = ring("k1")
    app = encrypted_app(make_app, keys, recorder)

    @app.queue("email").handler
    async def handle(msg: Message) -> None:
        raise DeadLetter("bounced")

    async with app:
        await app.queue("email").publish(SECRET)
        await run_until(app, recorder, lambda: recorder.counts[EventKind.DEAD_LETTERED] == 1)
    key = keys.get("k1")
    assert key is not None
    assert base64.b64encode(key).decode() not in caplog.text + repr(keys)
    assert "493817" not in caplog.text and "k1" in repr(keys)


async def test_an_encrypted_queue_without_keys_is_a_config_error(
        make_app: Callable[..., Tidings]) -> None:
    from tidings import ConfigError

    app = make_app()
    app.queue("email", encryption="aes-256-gcm")
    with pytest.raises(ConfigError) as info:
        await app.queue("email").publish("x")
    assert "no keys are set" in str(info.value)


async def test_dead_letters_are_reencrypted_so_the_old_key_can_be_retired(
        make_app: Callable[..., Tidings], recorder: Recorder) -> None:
    from tidings.security.encryption import Encryption
    from tidings.security.reencrypt import reencrypt_dead_letters

    old = ring("k1")
    app = encrypted_app(make_app, old, recorder)
    handled: list[Any] = []

    @app.queue("email").handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)
        raise DeadLetter("first time")

    async with app:
        email = app.queue("email")
        await email.publish_many([SECRET, SECRET, SECRET])
        await run_until(app, recorder, lambda: recorder.counts[EventKind.DEAD_LETTERED] == 3)
        rotated = old.rotated("k2")
        done = await reencrypt_dead_letters(email, rotated, batch=2)
        assert (done.rewritten, done.current, done.skipped) == (3, 0, [])
        again = await reencrypt_dead_letters(email, rotated)
        assert (again.rewritten, again.current) == (0, 3)
        entries = await email.dlq.list()
        assert {e.message.headers["enc-key"] for e in entries if e.message} == {"k2"}
        app.extension(Encryption).use(rotated.without("k1"))  # k1 retired
        seen: list[Any] = []

        @email.handler
        async def after(msg: Message) -> None:
            seen.append(msg.payload)

        assert await email.dlq.replay() == 3
        await run_until(app, recorder, lambda: len(seen) == 3)
    assert seen == [SECRET] * 3


def test_keys_cli_inits_rotates_lists_and_retires_a_0600_ring(tmp_path: Any) -> None:
    import json
    import stat

    from conftest import tidings

    path = tmp_path / "ring.json"
    env = {"TIDINGS_SECURITY__KEYRING_FILE": str(path)}
    tidings(env, "keys", "init", "--id", "k1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rotated = json.loads(tidings(env, "keys", "rotate", "--id", "k2", "--json").stdout)
    assert rotated == {"active": "k2", "ids": ["k1", "k2"]}
    listed = tidings(env, "keys", "list")
    assert listed.stdout == "k1\nk2  (active)\n"
    key = Keyring.load(path).get("k1")
    assert key is not None and base64.b64encode(key).decode() not in listed.stdout
    refused = tidings(env, "keys", "retire", "k2", code=2)
    assert "is the active key: rotate first" in refused.stderr
    tidings(env, "keys", "retire", "k1")
    assert Keyring.load(path).ids == ["k2"]


async def test_a_worker_of_an_encrypted_queue_without_keys_stops_at_start(
        make_app: Callable[..., Tidings]) -> None:
    from tidings import ConfigError

    app = make_app()

    @app.queue("email", encryption="aes-256-gcm").handler
    async def handle(msg: Message) -> None:
        raise AssertionError("never called")

    with pytest.raises(ConfigError, match="no keys are set"):
        await asyncio.wait_for(app.worker().run(), 20)


async def test_an_innermost_middleware_runs_after_the_others_whenever_added() -> None:
    from tidings import Middleware
    from tidings.core.middleware import MiddlewareChain

    order: list[str] = []

    class Tag(Middleware):
        def __init__(self, name: str, innermost: bool = False) -> None:
            self.name, self.innermost = name, innermost

        def before_publish(self, queue: str, message: Message) -> None:
            order.append(f"publish {self.name}")

        async def around_handler(self, message: Any, call_next: Any) -> Any:
            order.append(f"enter {self.name}")
            return await call_next()

    chain = MiddlewareChain([Tag("a"), Tag("inner", innermost=True)])
    chain.add(Tag("b"))  # added after the innermost one, still outside it
    chain.before_publish("q", Message("id", "q", None))

    async def handler() -> None:
        order.append("handler")

    await chain.call_handler(Message("id", "q", None), handler)
    assert order == ["publish a", "publish b", "publish inner",
                     "enter a", "enter b", "enter inner", "handler"]


async def test_an_ordered_queue_is_encrypted_when_protected(
        make_app: Callable[..., Tidings], recorder: Recorder, client: Redis) -> None:
    from tidings import OrderedQueue, OrderedWorker
    from tidings.security.encryption import Encryption

    app = make_app(middleware=[recorder])
    encryption = app.extension(Encryption)
    encryption.use(ring("k1"))
    encryption.protect("orders")
    orders = OrderedQueue(app, "orders", partitions=2, max_attempts=3, lease=2.0)
    seen: list[tuple[Any, int]] = []

    @orders.handler(concurrency=4)
    async def handle(msg: Message) -> None:
        seen.append((msg.payload, msg.attempts))
        if msg.attempts == 0:
            raise Retry(0.05)  # retried in place, ciphertext kept

    await orders.publish_many([("alice", SECRET), ("alice", {"n": 2})])
    values = await every_value(client, app.settings.key_prefix)  # queued: in the key's list
    assert any(b"enc-key" in v for v in values if v)
    async with OrderedWorker(app, [orders]):
        await recorder.wait_for(lambda: len(seen) == 4)
        values += await every_value(client, app.settings.key_prefix)
    assert seen == [(SECRET, 0), (SECRET, 1), ({"n": 2}, 0), ({"n": 2}, 1)]
    assert values and not [v for v in values for p in PLAINTEXTS if p in (v or b"")]
