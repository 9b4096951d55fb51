"""Least-privilege ACL users, applied on a real private server: a role x operation matrix.

Every role's user is created with ``tidings.security.acl`` (what ``tidings acl apply``
runs) on a private Valkey, then every operation is tried as that user: an allowed one must
work, a forbidden one must be refused by the server itself (NOPERM), never by tidings.
The expected matrix is the README's table ("Security"), so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from servers import private_server
from tidings import DeadLetter, Message, Retry, Tidings, ValidationError
from tidings.engine.connection import refusal_of
from tidings.engine.embedded import find_server_binary
from tidings.security.acl import Role, apply, generate

PREFIX = "acl"
README = Path(__file__).resolve().parent.parent / "README.md"
Op = Callable[[Tidings, Redis], Awaitable[Any]]


@pytest.fixture(scope="module", params=["valkey", "redis-server"])
def acl_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A private server: the embedded Valkey 8, and the machine's Redis 7.0 (no CLIENT
    SETINFO there: apply leaves it out)."""
    binary = find_server_binary() if request.param == "valkey" else shutil.which(request.param)
    if binary is None:
        pytest.skip("no redis-server on PATH (.ci/run installs it)")
    with private_server(binary) as port:
        yield f"redis://127.0.0.1:{port}/0"


async def _seed(url: str, dead: int) -> list[str]:
    """Messages in ``email`` and ``sms``, and ``dead`` dead letters of ``email``."""
    async with Tidings(url, key_prefix=PREFIX) as app:
        email = app.queue("email")
        await app.queue("sms").publish("sms body")
        await app.queue("scratch").publish("x")
        done = asyncio.Event()
        ids: list[str] = []

        @email.handler
        async def handle(msg: Message) -> None:
            ids.append(msg.id)
            if len(ids) == dead:
                done.set()
            raise DeadLetter("seeded")

        await email.publish_many([f"dead {i}" for i in range(dead)])
        worker = app.worker(["email"])
        task = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(done.wait(), 20)
        worker.stop()
        await task
        return ids


async def _consume(app: Tidings, raw: Redis) -> None:
    async with Tidings(Dead.server, key_prefix=PREFIX) as adm:
        await adm.queue("email").publish("to consume")
    handled = asyncio.Event()

    @app.queue("email").handler
    async def handle(msg: Message) -> None:
        handled.set()

    worker = app.worker(["email"])
    task = asyncio.ensure_future(worker.run())
    waiter = asyncio.ensure_future(handled.wait())
    await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    worker.stop()
    waiter.cancel()
    await task  # raises the worker's PermissionDeniedError
    assert handled.is_set()


class Dead:
    """The seeded dead letters, handed out one per operation that consumes one."""

    ids: list[str] = []
    server = ""  # the server's URL as its default user, to publish what _consume consumes

    @classmethod
    def take(cls) -> str:
        return cls.ids.pop()


OPERATIONS: dict[str, Op] = {
    "publish to its queue": lambda app, raw: app.queue("email").publish("x"),
    "publish to another queue": lambda app, raw: app.queue("sms").publish("x"),
    "consume its queue (fetch, ack)": _consume,
    "read another queue's messages": lambda app, raw: raw.xrange(f"{PREFIX}:{{sms}}:normal"),
    "queue stats": lambda app, raw: app.queue("email").stats(),
    "list its dead letters": lambda app, raw: app.queue("email").dlq.list(),
    "replay a dead letter": lambda app, raw: app.queue("email").dlq.replay([Dead.take()]),
    "purge a dead letter": lambda app, raw: app.queue("email").dlq.purge([Dead.take()]),
    "pause its queue": lambda app, raw: app.flow.pause("email"),
    "add a schedule": lambda app, raw: app.schedules.add(queue="email", every=3600,
                                                         payload=1, replace=True),
    "delete a queue": lambda app, raw: app.queue("scratch").delete(force=True),
    "FLUSHDB": lambda app, raw: raw.flushdb(),
    "CONFIG SET": lambda app, raw: raw.config_set("maxmemory-policy", "noeviction"),
    "KEYS": lambda app, raw: raw.keys("*"),
    "a key outside the prefix": lambda app, raw: raw.set("elsewhere:key", "x"),
}
ROLES = [Role.PRODUCER, Role.CONSUMER, Role.SCHEDULER, Role.OPERATOR, Role.ADMIN]


def readme_matrix() -> dict[str, dict[Role, bool]]:
    """The README's role x operation table: ``yes`` allowed, ``no`` refused."""
    text = README.read_text()
    section = text[text.index("<!-- acl-matrix -->"):text.index("<!-- /acl-matrix -->")]
    matrix: dict[str, dict[Role, bool]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(ROLES) + 1 and cells[1] in ("yes", "no"):
            row = zip(ROLES, cells[1:], strict=True)
            matrix[cells[0].strip("`")] = {r: c == "yes" for r, c in row}
    return matrix


async def _try(url: str, role: Role, name: str, op: Op) -> bool:
    """Whether the server let ``role`` do ``op`` (a refusal must be the server's NOPERM)."""
    user, password = generate(role, PREFIX, [] if role is Role.ADMIN else ["email"],
                              user=f"u-{role}")
    login = re.sub(r"^redis://", f"redis://{user.name}:{password}@", url)
    async with Redis.from_url(url) as admin:
        await apply(admin, [user])
    app = Tidings(login, key_prefix=PREFIX, connect_retries=0)
    app.queue("email")  # an app declares the queues it uses: the others in the operations
    raw = Redis.from_url(login)
    try:
        await app.connect()
        await op(app, raw)
        return True
    except Exception as exc:
        if refusal_of(exc, user.name) is None:
            raise AssertionError(f"{role} / {name}: not an ACL refusal: {exc!r}") from exc
        return False
    finally:
        await app.close()
        await raw.aclose()


@pytest.fixture(scope="module")
async def matrix(acl_url: str) -> AsyncIterator[dict[str, dict[Role, bool]]]:
    Dead.server = acl_url
    Dead.ids = await _seed(acl_url, 2 * len(ROLES))
    found: dict[str, dict[Role, bool]] = {}
    for name, op in OPERATIONS.items():
        found[name] = {role: await _try(acl_url, role, name, op) for role in ROLES}
    yield found


async def test_every_role_does_exactly_what_the_readme_matrix_says(
        matrix: dict[str, dict[Role, bool]]) -> None:
    expected = readme_matrix()
    assert set(expected) == set(OPERATIONS)
    false_allows = [(op, r) for op in expected for r in ROLES
                    if matrix[op][r] and not expected[op][r]]
    false_denies = [(op, r) for op in expected for r in ROLES
                    if expected[op][r] and not matrix[op][r]]
    assert (false_allows, false_denies) == ([], [])


async def test_no_role_but_admin_may_run_a_server_wide_command(
        matrix: dict[str, dict[Role, bool]]) -> None:
    for op in ("FLUSHDB", "CONFIG SET", "KEYS", "a key outside the prefix"):
        assert [r for r in ROLES if matrix[op][r]] == []


def _login(url: str, user: str, password: str) -> str:
    return re.sub(r"^redis://", f"redis://{user}:{password}@", url)


async def apps_as(url: str, prefix: str, *roles: Role) -> list[Tidings]:
    """An app per role, each logged in as a new user of that role (queue ``email``)."""
    users = [generate(role, prefix, ["email"], user=f"{prefix}-{role}") for role in roles]
    async with Redis.from_url(url) as admin:
        await apply(admin, [user for user, _ in users])
    return [Tidings(_login(url, user.name, password), key_prefix=prefix)
            for user, password in users]


async def work_until(app: Tidings, done: asyncio.Event) -> None:
    """Run a worker of ``app`` until ``done`` is set."""
    worker = app.worker()
    task = asyncio.ensure_future(worker.run())
    await asyncio.wait_for(done.wait(), 30)
    worker.stop()
    await task


async def test_producer_and_consumer_users_run_the_whole_lifecycle(acl_url: str) -> None:
    # Idempotency, delays, retries, dead-lettering and acks, each as its least user.
    pub, work = await apps_as(acl_url, "life", Role.PRODUCER, Role.CONSUMER)
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    @work.queue("email", max_attempts=3).handler
    async def handle(msg: Message) -> None:
        seen.append((msg.payload, msg.attempts))
        if len(seen) == 5:
            done.set()
        if msg.payload == "retry" and msg.attempts == 0:
            raise Retry(delay=0.05)
        if msg.payload == "dead":
            raise DeadLetter("bad address")

    try:
        async with pub:
            email = pub.queue("email")
            await email.publish("ok", idempotency_key="k")
            await email.publish("ok", idempotency_key="k")  # a duplicate: not queued again
            await email.publish_many(["retry", "dead"])
            await email.publish("later", delay=0.2)
        await work_until(work, done)
    finally:
        await work.close()
    assert sorted(seen) == [("dead", 0), ("later", 0), ("ok", 0), ("retry", 0), ("retry", 1)]
    async with Tidings(acl_url, key_prefix="life") as admin_app:
        dead = await admin_app.queue("email").dlq.list()
    assert [entry.message.payload for entry in dead] == ["dead"]


def test_cli_generates_and_applies_a_role(acl_url: str) -> None:
    from conftest import tidings

    env = {"TIDINGS_REDIS_URL": acl_url, "TIDINGS_KEY_PREFIX": "cli"}
    line = tidings(env, "acl", "generate", "--role", "consumer", "-q", "email", "-q", "sms")
    assert line.stdout.startswith("ACL SETUSER tidings-consumer reset on >")
    assert "~cli:{email}:*" in line.stdout and "~cli:{sms}:*" in line.stdout
    applied = tidings(env, "acl", "apply", "--role", "producer", "-q", "email", "--user",
                      "cli-p", "--json")
    password = json.loads(applied.stdout)["password"]
    with redis.Redis.from_url(_login(acl_url, "cli-p", password)) as as_user:
        assert as_user.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_user.xrange("cli:{email}:normal")
    refused = tidings(env, "acl", "generate", "--role", "producer", code=2)
    assert "role producer needs at least one --queue" in refused.stderr


def test_generated_rules_name_every_queue_and_quote_selectors() -> None:
    from tidings.security.acl import role_rules

    rules = role_rules(Role.CONSUMER, "p", ["email", "sms"])
    assert "~p:{email}:*" in rules and "~p:{sms}:*" in rules and "-@all" in rules
    dlq = next(r for r in rules if ":dlq" in r and r.startswith("("))
    assert dlq == "(~p:{email}:dlq ~p:{sms}:dlq -@all +xadd)"  # append only
    assert "~p:{*}:*" in role_rules(Role.OPERATOR, "p")  # an operator of every queue
    user, password = generate(Role.PRODUCER, "p", ["email"], user="api")
    assert user.line().startswith(f"ACL SETUSER api reset on >{password} ")
    assert '"(~p:{email}:wake -@all +xadd)"' in user.line()
    with pytest.raises(ValidationError):
        role_rules(Role.PRODUCER, "p", ["email", "bad name"])


async def test_a_scheduler_user_stores_and_fires_schedules_into_its_queue(acl_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) + timedelta(seconds=5)  # history starts at creation
    user, password = generate(Role.SCHEDULER, "sched", ["email"], user="sched-s")
    async with Redis.from_url(acl_url) as admin:
        await apply(admin, [user])
    app = Tidings(_login(acl_url, user.name, password), key_prefix="sched")
    app.queue("email")
    try:
        await app.schedules.add("digest", queue="email", every=60, start=start, payload="d")
        fired = await app.schedules.tick(start + timedelta(seconds=1))  # the ticker's step
        assert len(fired) == 1
        assert (await app.schedules.get("digest")).fired_count == 1
    finally:
        await app.close()
    async with Redis.from_url(acl_url) as admin:
        # published into the queue (due at its occurrence, 5 s ahead: in the delayed set)
        queued = (await admin.xlen("sched:{email}:normal")
                  + await admin.zcard("sched:{email}:delayed"))
        assert queued == 1


async def test_producer_and_consumer_users_run_encrypted_subject_messages(
        acl_url: str) -> None:
    from tidings.security.encryption import Encryption
    from tidings.security.keyring import Keyring, new_key

    keys = Keyring({"k1": new_key()}, "k1")
    pub, work = await apps_as(acl_url, "enc", Role.PRODUCER, Role.CONSUMER)
    done = asyncio.Event()
    seen: list[Any] = []
    for app in (pub, work):
        app.queue("email", encryption="aes-256-gcm")
        app.extension(Encryption).use(keys)

    @work.queue("email").handler
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)
        if len(seen) == 2:
            done.set()

    try:
        async with pub:
            await pub.extension(Encryption).subjects.prepare(["frank"])
            await pub.queue("email").publish("to frank", headers={"subject": "frank"})
            await pub.queue("email").publish("to all")
        await work_until(work, done)
    finally:
        await work.close()
    assert sorted(seen) == ["to all", "to frank"]
