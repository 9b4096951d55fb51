"""Backup and restore drill: load, back up, destroy, restore; every message queued at
backup time is queued again, and the ledger is back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import asyncpg
import orjson

from conftest import drop_keys, tidings
from test_outbox import queued_payloads
from tidings import Outgoing, Tidings
from tidings.ledger.backup import backup, restore


async def test_backup_destroy_restore_brings_every_message_back(
        make_app: Callable[..., Tidings], pg_url: str, new_schema: Callable[[], str],
        tmp_path: Path) -> None:
    schema = new_schema()
    app = make_app(ledger={"database_url": pg_url, "db_schema": schema,
                           "retention_in_workers": False})
    app.ledger.install(relay=False)
    q = app.queue("backup-q")
    (tmp_path / "tidings-backup-20000101T000000000000Z").mkdir()  # a 2000 backup: expired
    async with app:
        await q.publish_many([Outgoing({"n": n}, priority=("high", "normal", "low")[n % 3])
                              for n in range(1000)])
        await q.publish_many([Outgoing({"later": n}, delay=3600) for n in range(10)])
        await app.ledger.flush()
        before = sorted(orjson.dumps(p) for p in await queued_payloads(app, "backup-q"))
        report = await backup(app, app.ledger, tmp_path)
        assert report.postgres and report.keys > 0 and report.removed_old == 1
        # destroy both sides
        await drop_keys(app.broker.client, app.settings.key_prefix)
        conn = await asyncpg.connect(pg_url)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        assert (await q.stats()).depth == 0
        back = await restore(app, app.ledger, tmp_path)
        assert back.keys == report.keys and back.postgres
        stats = await q.stats()
        assert stats.depth == 1000 and stats.delayed == 10
        after = sorted(orjson.dumps(p) for p in await queued_payloads(app, "backup-q"))
        assert after == before
        assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".messages') == 1010
        await conn.close()


def test_backup_and_restore_commands(known_env: dict[str, str], tmp_path: Path) -> None:
    made = orjson.loads(tidings(known_env, "backup", str(tmp_path), "--json").output)
    assert made["keys"] > 0 and not made["postgres"]
    back = orjson.loads(tidings(known_env, "restore", str(tmp_path), "--json").output)
    assert back["keys"] == made["keys"]
    assert "no tidings backup" in tidings(known_env, "restore", str(tmp_path / "none"),
                                          code=2).output
