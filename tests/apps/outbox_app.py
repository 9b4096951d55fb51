"""An app for the outbox relay process tests: ``tidings outbox relay --app
tests.apps.outbox_app:app``, configured by the usual TIDINGS_* variables (TIDINGS_REDIS_URL,
TIDINGS_KEY_PREFIX, TIDINGS_DATABASE_URL, TIDINGS_DB_SCHEMA, TIDINGS_OUTBOX_BATCH);
``OUTBOX_QUEUE`` names its queue (default ``outbox``)."""

from __future__ import annotations

import os

from tidings import Tidings

app = Tidings()
app.queue(os.environ.get("OUTBOX_QUEUE", "outbox"))
