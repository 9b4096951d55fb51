"""The S3 archive of ledger days: written by retention before it drops a day, read back
by ``tidings archive restore``, rewritten by GDPR erasure.

One object per queue and day, ``PREFIX/YYYY-MM-DD/QUEUE.jsonl.gz``: one JSON line per
message, ``{"message": <messages row>, "events": [<events rows>]}``, gzip-compressed; and
``PREFIX/YYYY-MM-DD/manifest.json`` listing the day's objects with their row counts and
SHA-256. Works with any S3-compatible server (``TIDINGS_S3_ENDPOINT_URL``); credentials
come from the usual AWS variables or files, never from tidings settings.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from ..core.errors import ConfigError
from . import queries

DAY_ROWS = """
SELECT m.queue, row_to_json(m)::text AS message, (
    SELECT coalesce(json_agg(row_to_json(e) ORDER BY e.at, e.event_id), '[]')::text
    FROM events e WHERE e.day = m.day AND e.message_id = m.message_id) AS events
FROM messages m WHERE m.day = $1 AND ($2::text IS NULL OR m.queue = $2)
ORDER BY m.queue, m.message_id
"""
RESTORE_MESSAGES = """
INSERT INTO messages SELECT * FROM jsonb_populate_recordset(NULL::messages, $1::jsonb)
ON CONFLICT DO NOTHING
"""
RESTORE_EVENTS = """
INSERT INTO events SELECT * FROM jsonb_populate_recordset(NULL::events, $1::jsonb)
ON CONFLICT DO NOTHING
"""


@dataclass(slots=True)
class ArchivedObject:
    queue: str
    key: str
    rows: int
    sha256: str


def _lines(rows: list[dict[str, Any]]) -> bytes:
    return gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in rows), mtime=0)


def _read(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in gzip.decompress(body).splitlines() if line]


class Archive:
    """Day objects in ``s3://bucket/prefix`` (see the module docstring)."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        if not url.startswith("s3://"):
            raise ConfigError("TIDINGS_ARCHIVE_URL", "must be s3://bucket/prefix")
        self.bucket, _, prefix = url[5:].partition("/")
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url

    def key(self, day: date, name: str) -> str:
        return "/".join(p for p in (self.prefix, day.isoformat(), name) if p)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        from aiobotocore.session import get_session

        region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
        async with get_session().create_client("s3", endpoint_url=self.endpoint_url,
                                               region_name=region) as client:
            yield client

    async def _get(self, s3: Any, key: str) -> bytes | None:
        try:
            reply = await s3.get_object(Bucket=self.bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            return None
        async with reply["Body"] as body:
            data: bytes = await body.read()
        return data

    async def manifest(self, s3: Any, day: date) -> dict[str, Any]:
        raw = await self._get(s3, self.key(day, "manifest.json"))
        return {"day": day.isoformat(), "objects": {}} if raw is None else orjson.loads(raw)

    async def _put(self, s3: Any, day: date, manifest: dict[str, Any], queue: str,
                   rows: list[dict[str, Any]]) -> ArchivedObject:
        body = _lines(rows)
        key = self.key(day, f"{queue}.jsonl.gz")
        await s3.put_object(Bucket=self.bucket, Key=key, Body=body)
        item = ArchivedObject(queue, key, len(rows), hashlib.sha256(body).hexdigest())
        manifest["objects"][queue] = {"key": key, "rows": item.rows, "sha256": item.sha256}
        return item

    async def _save_manifest(self, s3: Any, day: date, manifest: dict[str, Any]) -> None:
        await s3.put_object(Bucket=self.bucket, Key=self.key(day, "manifest.json"),
                            Body=orjson.dumps(manifest, option=orjson.OPT_INDENT_2))

    async def write_day(self, conn: Any, day: date, queue: str | None = None
                        ) -> list[ArchivedObject]:
        """Archive ``day`` (one queue of it, or all), then record it in archived_days."""
        by_queue: dict[str, list[dict[str, Any]]] = {}
        for row in await conn.fetch(DAY_ROWS, day, queue):
            by_queue.setdefault(row["queue"], []).append(
                {"message": orjson.loads(row["message"]), "events": orjson.loads(row["events"])})
        written = []
        async with self.client() as s3:
            manifest = await self.manifest(s3, day)
            for name, rows in by_queue.items():
                written.append(await self._put(s3, day, manifest, name, rows))
            if written:
                await self._save_manifest(s3, day, manifest)
        for item in written:
            await conn.execute("INSERT INTO archived_days (day, queue, object_key, rows) VALUES "
                               "($1, $2, $3, $4) ON CONFLICT (day, queue) DO UPDATE SET "
                               "object_key = EXCLUDED.object_key, rows = EXCLUDED.rows, "
                               "archived_at = now()", day, item.queue, item.key, item.rows)
        return written

    async def restore(self, conn: Any, day: date, queue: str | None = None) -> int:
        """Load an archived day (or one queue of it) back into the ledger; rows loaded."""
        async with self.client() as s3:
            manifest = await self.manifest(s3, day)
            names = [q for q in manifest["objects"] if queue is None or q == queue]
            loaded = 0
            for table in ("messages", "events"):
                await conn.execute(queries.create_partition(table, day))
            for name in names:
                body = await self._get(s3, manifest["objects"][name]["key"])
                rows = _read(body or gzip.compress(b""))
                async with conn.transaction():
                    await conn.execute(RESTORE_MESSAGES,
                                       orjson.dumps([r["message"] for r in rows]).decode())
                    await conn.execute(RESTORE_EVENTS, orjson.dumps(
                        [e for r in rows for e in r["events"]]).decode())
                loaded += len(rows)
        return loaded

    async def erase(self, subject: str) -> int:
        """Rewrite every archived object without the messages of ``subject``; how many
        messages were removed."""
        removed = 0
        async with self.client() as s3:
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "")
            manifests = [obj["Key"] async for page in pages for obj in page.get("Contents", [])
                         if obj["Key"].endswith("/manifest.json")]
            for key in manifests:
                day = date.fromisoformat(key.rsplit("/", 2)[-2])
                manifest = await self.manifest(s3, day)
                changed = False
                for name, entry in list(manifest["objects"].items()):
                    rows = _read(await self._get(s3, entry["key"]) or gzip.compress(b""))
                    kept = [r for r in rows if r["message"].get("subject") != subject]
                    if len(kept) != len(rows):
                        removed += len(rows) - len(kept)
                        await self._put(s3, day, manifest, name, kept)
                        changed = True
                if changed:
                    await self._save_manifest(s3, day, manifest)
        return removed
