"""An app with one ordered queue, for tests that kill worker processes.

Run it as real processes: ``tidings ordered worker tests.apps.ordered_app:app``. The usual
``TIDINGS_*`` variables configure the app; these knobs configure ordered queue ``chaos``:

``ORDERED_PARTITIONS``   partitions (default 8)
``ORDERED_LEASE``        partition lease seconds (default 1.5)
``ORDERED_CONCURRENCY``  handler concurrency per worker (default 16)
``ORDERED_SLEEP``        each call sleeps a random time up to this many seconds (0.02)

The handler records, in order, JSON lines in ``<prefix>:ordered:log``:
``["s", key, seq, pid, start]`` when a call starts, ``["d", key, seq, pid, start, end]``
when it finished and ``["c", key, seq, pid, start, end]`` when it was cancelled (its worker
gave up the partition). The payload is ``{"seq": n}``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import orjson

from tidings import Message, Tidings
from tidings.ordering.queue import OrderedQueue

PREFIX = os.environ.get("TIDINGS_KEY_PREFIX", "tidings")
LOG_KEY = f"{PREFIX}:ordered:log"
SLEEP = float(os.environ.get("ORDERED_SLEEP", "0.02"))

app = Tidings()
chaos = OrderedQueue(app, "chaos", partitions=int(os.environ.get("ORDERED_PARTITIONS", "8")),
                     lease=float(os.environ.get("ORDERED_LEASE", "1.5")))


@chaos.handler(concurrency=int(os.environ.get("ORDERED_CONCURRENCY", "16")))
async def handle(msg: Message) -> None:
    key, seq, pid = msg.headers["ordering_key"], msg.payload["seq"], os.getpid()
    client = app.broker.client
    start = time.time()
    await client.rpush(LOG_KEY, orjson.dumps(["s", key, seq, pid, start]))
    try:
        await asyncio.sleep(random.random() * SLEEP)
    except asyncio.CancelledError:
        await client.rpush(LOG_KEY, orjson.dumps(["c", key, seq, pid, start, time.time()]))
        raise
    await client.rpush(LOG_KEY, orjson.dumps(["d", key, seq, pid, start, time.time()]))
