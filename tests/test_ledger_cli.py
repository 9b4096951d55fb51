"""The PostgreSQL commands: db migrate, trace, audit list / verify (the hash chain catches
an edited, a deleted and a removed newest record), erase's errors."""

from __future__ import annotations

import asyncio
import getpass
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
import pytest

from conftest import tidings
from tidings import Tidings


@pytest.fixture
def pg_env(known_env: dict[str, str], pg_url: str, new_schema: Callable[[], str]
           ) -> dict[str, str]:
    return {**known_env, "TIDINGS_DATABASE_URL": pg_url, "TIDINGS_DB_SCHEMA": new_schema()}


def sql(pg_url: str, schema: str, *statements: str) -> list[Any]:
    async def main() -> list[Any]:
        conn = await asyncpg.connect(pg_url, server_settings={"search_path": schema})
        try:
            return [await conn.fetch(s) for s in statements]
        finally:
            await conn.close()

    return asyncio.run(main())


def with_ledger_app(env: dict[str, str], body: Callable[[Tidings], Any]) -> Any:
    """Run ``body(app)`` on an app of ``env`` (its database and schema too)."""
    async def main() -> Any:
        app = Tidings(env["TIDINGS_REDIS_URL"], key_prefix=env["TIDINGS_KEY_PREFIX"], ledger={
            "database_url": env["TIDINGS_DATABASE_URL"], "db_schema": env["TIDINGS_DB_SCHEMA"],
            "subject_path": env.get("TIDINGS_SUBJECT_PATH")})
        app.queue("email")
        async with app:
            return await body(app)

    return asyncio.run(main())


def test_db_migrate_is_idempotent(known_env: dict[str, str], pg_url: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    env = {**known_env, "TIDINGS_DATABASE_URL": pg_url, "TIDINGS_DB_SCHEMA": schema}
    try:
        first = tidings(env, "db", "migrate").output
        assert "0001_ledger.sql" in first and "0003_audit.sql" in first
        assert "up to date" in tidings(env, "db", "migrate").output
        # each run is an authorised operation with its outcome in the ledger's trail
        runs = orjson.loads(tidings(env, "audit", "list", "--action", "db.migrate",
                                    "--json").output)
        assert [r["params"]["outcome"] for r in runs] == ["done", "done"]
        assert "0003_audit.sql" in runs[0]["params"]["applied"]
        assert runs[1]["params"]["applied"] == []
    finally:
        sql(pg_url, "public", f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_without_a_database_the_commands_say_which_setting(known_env: dict[str, str]) -> None:
    result = tidings(known_env, "trace", "01ARZ3NDEKTSV4RRFFQ69G5FAV", code=2)
    assert "TIDINGS_DATABASE_URL" in result.output and "Traceback" not in result.output


def test_trace_prints_the_timeline(pg_env: dict[str, str]) -> None:
    async def publish(app: Tidings) -> str:
        app.ledger.install(relay=False)
        msg_id = await app.queue("email").publish({"to": "ann"}, correlation_id="order-9")
        await app.ledger.flush()
        return msg_id

    msg_id = with_ledger_app(pg_env, publish)
    out = tidings(pg_env, "trace", msg_id).output
    assert msg_id in out and "published" in out and getpass.getuser() in out
    (found,) = orjson.loads(tidings(pg_env, "trace", "--correlation-id", "order-9",
                                    "--json").output)
    assert found["message_id"] == msg_id and found["events"][0]["kind"] == "published"
    assert "no such message" in tidings(pg_env, "trace", "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                                        code=1).output
    assert "message_id" in tidings(pg_env, "trace", "nope", code=2).output


def test_admin_commands_are_audited_and_verify_catches_tampering(
        pg_env: dict[str, str], pg_url: str) -> None:
    schema = pg_env["TIDINGS_DB_SCHEMA"]
    tidings(pg_env, "pause", "email")
    tidings(pg_env, "resume", "email")
    tidings(pg_env, "weights", "sms", "5", "3", "1")
    records = orjson.loads(tidings(pg_env, "audit", "list", "--json").output)
    # the security audit's outcome records, one per operation, in the ledger's trail
    assert [(r["action"], r["target"]) for r in records] == [
        ("queue.pause", "email"), ("queue.resume", "email"), ("queue.weights", "sms")]
    assert all(r["actor"] == f"local:{getpass.getuser()}" for r in records)
    assert records[2]["params"] == {"outcome": "done", "permission": "queue:weights:sms",
                                    "high": 5, "normal": 3, "low": 1}
    only = orjson.loads(tidings(pg_env, "audit", "list", "--action", "queue.resume",
                                "--json").output)
    assert [r["action"] for r in only] == ["queue.resume"]
    assert "intact" in tidings(pg_env, "audit", "verify").output
    # the table refuses edits; a tamperer with the owner's rights turns the trigger off
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        sql(pg_url, schema, "UPDATE audit SET actor = 'mallory'")
    tamper = "ALTER TABLE audit DISABLE TRIGGER audit_append_only"
    sql(pg_url, schema, tamper,
        "UPDATE audit SET params = '{}' WHERE action = 'queue.resume'")
    out = tidings(pg_env, "audit", "verify", code=1).output
    assert "edited" in out and "TAMPERED" in out
    sql(pg_url, schema, "DELETE FROM audit WHERE action = 'queue.pause'")
    assert "chain broken" in tidings(pg_env, "audit", "verify", code=1).output
    sql(pg_url, schema, "DELETE FROM audit WHERE action = 'queue.weights'")
    assert "newest record" in tidings(pg_env, "audit", "verify", code=1).output


def test_erase_needs_the_subject_path(pg_env: dict[str, str]) -> None:
    result = tidings(pg_env, "erase", "--subject", "ann", code=2)
    assert "TIDINGS_SUBJECT_PATH" in result.output


def test_erase_from_the_command_line_reports_what_went(pg_env: dict[str, str]) -> None:
    env = {**pg_env, "TIDINGS_SUBJECT_PATH": "payload.to"}

    async def publish(app: Tidings) -> None:
        await app.queue("email").publish({"to": "zoe"})

    with_ledger_app(env, publish)
    report = orjson.loads(tidings(env, "erase", "--subject", "zoe", "--json").output)
    assert report["queued"] == 1
    (record,) = orjson.loads(tidings(env, "audit", "list", "--action", "erase",
                                     "--json").output)
    assert "zoe" not in orjson.dumps(record).decode()


def test_a_bad_database_url_is_one_line_without_the_password(
        known_env: dict[str, str]) -> None:
    result = tidings(known_env, "trace", "01ARZ3NDEKTSV4RRFFQ69G5FAV", code=2,
                     TIDINGS_DATABASE_URL="mysql://ann:s3cret@db/x")
    assert "TIDINGS_DATABASE_URL" in result.output and "s3cret" not in result.output


def test_an_unreachable_database_is_one_line(known_env: dict[str, str]) -> None:
    from ledger_helpers import free_port

    url = f"postgresql://ann:s3cret@127.0.0.1:{free_port()}/x"
    result = tidings(known_env, "trace", "01ARZ3NDEKTSV4RRFFQ69G5FAV", code=3,
                     TIDINGS_DATABASE_URL=url)
    assert "cannot be reached" in result.output and "s3cret" not in result.output
