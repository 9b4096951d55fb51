"""``tidings backup`` / ``tidings restore``: the Redis state of one key prefix and the
tidings schema in PostgreSQL, to a directory, kept ``keep_days`` (30) days.

Redis: every key of the prefix is read with ``DUMP`` and ``PTTL`` inside one
``MULTI``/``EXEC`` per chunk of 5,000 keys, so a chunk is one instant of the server (a
prefix of up to 5,000 keys, which is every queue's streams and sets, is one consistent
snapshot); the serialized values go to ``redis.dump`` (msgpack records) and come back with
``RESTORE ... REPLACE``. This works with any server the app can reach (no access to its
files, no restart), unlike copying an RDB file. PostgreSQL: ``pg_dump`` of the schema
(custom format) and ``pg_restore --clean``. Keys created after the scan, and rows written
after the dump started, are not in the backup: the RPO is the time since the backup.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import msgpack
import orjson

from ..core.errors import TidingsError, ValidationError

if TYPE_CHECKING:
    from ..queues.host import ExtensionHost
    from .extension import Ledger

_CHUNK = 5000
_NAME = "tidings-backup-%Y%m%dT%H%M%S%fZ"


class BackupError(TidingsError):
    """A backup or restore step failed (the message names it)."""


@dataclass(slots=True)
class BackupReport:
    path: str
    keys: int = 0
    redis_bytes: int = 0
    postgres: bool = False
    seconds: float = 0.0
    removed_old: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _dump_redis(app: ExtensionHost, target: Path) -> tuple[int, int]:
    client = app.broker.client
    prefix = app.key_space.prefix
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    count = size = 0
    out = await asyncio.to_thread(open, target, "wb")
    try:
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            pipe = client.pipeline(transaction=True)  # one instant for the whole chunk
            for key in chunk:
                pipe.dump(key)
                pipe.pttl(key)
            replies = await pipe.execute()
            data = b"".join(msgpack.packb([key, max(0, replies[2 * j + 1]), replies[2 * j]],
                                          use_bin_type=True)
                            for j, key in enumerate(chunk) if replies[2 * j] is not None)
            count += sum(1 for j in range(len(chunk)) if replies[2 * j] is not None)
            size += len(data)
            await asyncio.to_thread(out.write, data)
    finally:
        await asyncio.to_thread(out.close)
    return count, size


def _pg_command(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (PostgreSQL client tools); the database "
                          "part cannot be backed up or restored")
    return found


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries it instead (a
    password in a command line is visible to every user of the machine)."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.netloc.rsplit("@", 1)[1]
        user = unquote(parts.username or "")
        parts = parts._replace(netloc=f"{quote(user)}@{host}" if user else host)
    return urlunsplit(parts), env


def _run(args: list[str], what: str, env: dict[str, str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise BackupError(f"{what} failed: {detail[0]}")


async def backup(app: ExtensionHost, ledger: Ledger | None, directory: Path, *,
                 keep_days: int = 30) -> BackupReport:
    """Back up the prefix's Redis keys (and the tidings schema) into a new folder of
    ``directory``; folders of earlier backups older than ``keep_days`` are removed."""
    if type(keep_days) is not int or keep_days < 1:
        raise ValidationError("keep_days", f"must be a whole number of days >= 1, got "
                              f"{keep_days!r}")
    started = time.perf_counter()
    now = datetime.fromtimestamp(app.clock.time(), UTC)
    folder = directory / now.strftime(_NAME)
    folder.mkdir(parents=True)
    report = BackupReport(str(folder))
    report.keys, report.redis_bytes = await _dump_redis(app, folder / "redis.dump")
    if ledger is not None and ledger.configured:
        url, env = _libpq(await asyncio.to_thread(ledger.url))
        await asyncio.to_thread(_run, [_pg_command("pg_dump"), "--format=custom",
                                       f"--schema={ledger.schema}",
                                       f"--file={folder}/postgres.dump", url], "pg_dump", env)
        report.postgres = True
    (folder / "manifest.json").write_bytes(orjson.dumps(
        {"made_at": now.isoformat(), "prefix": app.key_space.prefix, "keys": report.keys,
         "schema": ledger.schema if report.postgres and ledger else None},
        option=orjson.OPT_INDENT_2))
    report.removed_old = _expire(directory, now - timedelta(days=keep_days), folder)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _expire(directory: Path, before: datetime, keep: Path) -> int:
    removed = 0
    for item in directory.glob("tidings-backup-*"):
        try:
            made = datetime.strptime(item.name, _NAME).replace(tzinfo=UTC)
        except ValueError:
            continue
        if made < before and item != keep:
            shutil.rmtree(item)
            removed += 1
    return removed


def latest(directory: Path) -> Path:
    """The newest backup folder in ``directory`` (or ``directory`` itself if it is one)."""
    if (directory / "manifest.json").exists():
        return directory
    found = sorted(directory.glob("tidings-backup-*"))
    if not found:
        raise ValidationError("path", f"no tidings backup in {directory}")
    return found[-1]


async def restore(app: ExtensionHost, ledger: Ledger | None, path: Path) -> BackupReport:
    """Bring a backup back: every key (replacing what is there) and the schema."""
    started = time.perf_counter()
    folder = latest(path)
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    if manifest["prefix"] != app.key_space.prefix:
        raise ValidationError("path", f"the backup is of key prefix {manifest['prefix']!r}, "
                              f"not {app.key_space.prefix!r} (set TIDINGS_KEY_PREFIX)")
    report = BackupReport(str(folder))
    client = app.broker.client
    with (folder / "redis.dump").open("rb") as source:
        pipe = client.pipeline(transaction=False)
        for key, ttl, value in msgpack.Unpacker(source, raw=False, max_buffer_size=2**31 - 1):
            pipe.restore(key, ttl, value, replace=True)
            report.keys += 1
            if len(pipe) >= 500:
                await pipe.execute()
        await pipe.execute()
    report.redis_bytes = (folder / "redis.dump").stat().st_size
    if manifest.get("schema") and ledger is not None:
        url, env = _libpq(await asyncio.to_thread(ledger.url))
        await asyncio.to_thread(_run, [_pg_command("pg_restore"), "--clean", "--if-exists",
                                       "--no-owner", f"--dbname={url}",
                                       str(folder / "postgres.dump")], "pg_restore", env)
        report.postgres = True
    report.seconds = round(time.perf_counter() - started, 3)
    return report
