"""Shared fixtures: one real server per test session, one key prefix per test.

By default the embedded server is started once; TIDINGS_TEST_REDIS_URL points the whole
suite at another server (CI also runs it against the machine's Redis 7.0).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import hypothesis  # noqa: F401 - see below
import pytest
from redis.asyncio import Redis

from tidings import Event, EventKind, Message, Middleware, Queue, Tidings

# hypothesis is imported here, at collection, because its pytest plugin otherwise imports it
# at the end of a run that selected no hypothesis test, deep in pytest's hooks, where
# CPython 3.11's compiler can fail with "AST constructor recursion depth mismatch".

pytest_plugins = ["fault_helpers", "ledger_helpers"]  # worker processes; PostgreSQL (ledger)


@pytest.fixture(scope="session")
def server_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    if os.environ.get("TIDINGS_TEST_REDIS_URL"):
        yield None
        return
    from tidings.engine.embedded import stop_server

    path = tmp_path_factory.mktemp("tidings-server")
    yield path
    stop_server(path)


@pytest.fixture(scope="session")
def redis_url(server_dir: Path | None) -> str:
    url = os.environ.get("TIDINGS_TEST_REDIS_URL")
    if url:
        return url
    from tidings.engine.embedded import ensure_server

    assert server_dir is not None
    return ensure_server(server_dir)


class Recorder(Middleware):
    """Records lifecycle events and lets a test await them instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.counts: Counter[EventKind] = Counter()
        self._changed = asyncio.Event()

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        self.counts[event.kind] += 1
        self._changed.set()

    def of(self, kind: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind is kind]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_count(self, kind: EventKind, count: int, timeout: float = 20.0) -> None:
        await self.wait_for(lambda: self.counts[kind] >= count, timeout)


def collect_payloads(queue: Queue) -> list[Any]:
    """Register a handler on ``queue`` that records each payload; returns the record."""
    handled: list[Any] = []

    @queue.handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)

    return handled


async def held_by_dead_consumer(queue: Queue, count: int) -> None:
    """Publish payloads ``0..count-1`` that a consumer read and then died holding."""
    await queue.publish_many(range(count))
    await queue.app.connect()
    await queue.app.broker.client.xreadgroup("tidings", "ghost", {queue.keys.normal: ">"},
                                             count=count)


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


async def drop_keys(client: Redis, prefix: str) -> None:
    """Delete every key under ``prefix``."""
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i:i + 500])


async def drop_prefix(app: Tidings) -> None:
    if app.broker.connected:
        await drop_keys(app.broker.client, app.settings.key_prefix)


@pytest.fixture
async def make_app(redis_url: str) -> AsyncIterator[Callable[..., Tidings]]:
    """Factory of apps sharing one fresh key prefix (several apps = several processes)."""
    prefix = new_prefix()
    apps: list[Tidings] = []

    def factory(**kwargs: Any) -> Tidings:
        kwargs.setdefault("key_prefix", prefix)
        app = Tidings(redis_url, **kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        if app.broker.connected:
            await drop_prefix(app)
            break
    for app in apps:
        await app.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(make_app: Callable[..., Tidings], recorder: Recorder) -> Tidings:
    return make_app(middleware=[recorder])


# -- raw clients, for the flow primitives that take a redis-py client ----------------------


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    """A redis-py client of the session's server."""
    redis = Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def client2(redis_url: str) -> AsyncIterator[Redis]:
    """A second connection, standing for another process."""
    redis = Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def acl_user(client: Redis) -> AsyncIterator[Callable[..., Any]]:
    """Creates ACL users with unique names on the test server; deletes them after."""
    made: list[str] = []

    async def create(*rules: str, password: str = "right-password") -> str:
        name = f"tidings_test_{uuid.uuid4().hex[:10]}"
        await client.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}",
                                     *rules)
        made.append(name)
        return name

    yield create
    for name in made:
        await client.execute_command("ACL", "DELUSER", name)


@pytest.fixture
async def prefix(client: Redis) -> AsyncIterator[str]:
    """A fresh key prefix for ``client``; its keys are deleted after the test."""
    prefix = new_prefix()
    yield prefix
    await drop_keys(client, prefix)


# -- the tidings command ----------------------------------------------------------------------


T = TypeVar("T")


@pytest.fixture
def cli_env(redis_url: str) -> Iterator[dict[str, str]]:
    """Environment of a ``tidings`` invocation: the session's server, a fresh key prefix
    (its keys are deleted afterwards)."""
    env = {"TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": new_prefix()}
    yield env

    async def drop(app: Tidings) -> None:
        await drop_prefix(app)

    with_app(env, drop)


@pytest.fixture
def known_env(cli_env: dict[str, str]) -> dict[str, str]:
    """:func:`cli_env` where an app declaring the queues ``email`` and ``sms`` connected,
    so the CLI knows them."""
    async def connected(app: Tidings) -> None:
        return None

    with_app(cli_env, connected, "email", "sms")
    return cli_env


def with_app(env: dict[str, str], body: Callable[[Tidings], Awaitable[T]],
             *queues: str) -> T:
    """Run ``body(app)`` on a connected app of ``env`` that declares ``queues`` (outside an
    event loop, as the CLI tests are synchronous)."""
    async def main() -> T:
        app = Tidings(env["TIDINGS_REDIS_URL"], key_prefix=env["TIDINGS_KEY_PREFIX"])
        for name in queues:
            app.queue(name)
        async with app:
            return await body(app)

    return asyncio.run(main())


def tidings(env: dict[str, str], *args: str, code: int = 0, input: str | bytes | None = None,
            **extra_env: str) -> Any:
    """Run the ``tidings`` command in-process; asserts its exit code, returns the result."""
    from typer.testing import CliRunner

    from tidings.cli.main import cli

    result = CliRunner().invoke(cli, list(args), env={**env, **extra_env}, input=input)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result
