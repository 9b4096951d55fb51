"""A Tidings app for flow-control tests, configured entirely from the environment.

Run it as a real process: ``tidings worker tests.apps.flow_app:app``. The usual
``TIDINGS_*`` variables configure the app; these knobs configure queue ``flow``:

``FLOW_RATE`` / ``FLOW_BURST``  a fleet-wide rate limit of the queue ("100/s"), its burst
``FLOW_KEY_RATE``               a rate per key (the payload's ``key``), burst 1
``FLOW_CAP`` / ``FLOW_LEASE``   a fleet-wide concurrency cap, its lease seconds
``FLOW_CONCURRENCY``            handler concurrency per worker (default 16)
``FLOW_SLEEP``                  seconds each call sleeps (a payload ``{"sleep": s}`` wins)
``FLOW_VT``                     visibility timeout, seconds (default 5)
``FLOW_RECORD_LIMITED``         ``1``: append the wait of every time the rate limit held the
                                fetch back (its RATE_LIMITED event) to ``<prefix>:flowtest:limited``

The handler records, under the key prefix so every test stays isolated, one JSON line
``[msg id, key, start, end, pid, attempts]`` per finished call in ``<prefix>:flowtest:calls``
and the message id of every call it starts in ``<prefix>:flowtest:started``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson

from tidings import Event, EventKind, Message, Middleware, Tidings

PREFIX = os.environ.get("TIDINGS_KEY_PREFIX", "tidings")
CALLS_KEY = f"{PREFIX}:flowtest:calls"
STARTED_KEY = f"{PREFIX}:flowtest:started"
LIMITED_KEY = f"{PREFIX}:flowtest:limited"
SLEEP = float(os.environ.get("FLOW_SLEEP", "0"))

app = Tidings()
queue = app.queue("flow", visibility_timeout=float(os.environ.get("FLOW_VT", "5")))
if os.environ.get("FLOW_RATE"):
    burst = os.environ.get("FLOW_BURST")
    app.flow.rate_limit("flow-rate", os.environ["FLOW_RATE"],
                        burst=int(burst) if burst else None).protect(queue)
if os.environ.get("FLOW_KEY_RATE"):
    app.flow.key_rate_limit("flow-key", os.environ["FLOW_KEY_RATE"],
                            key=lambda m: m.payload.get("key")).protect(queue)
if os.environ.get("FLOW_CAP"):
    app.flow.concurrency("flow-cap", int(os.environ["FLOW_CAP"]),
                         lease=float(os.environ.get("FLOW_LEASE", "30"))).protect(queue)


class _RecordLimited(Middleware):
    """The script's own verdicts: each refusal's wait tells which rate it applied."""

    def __init__(self) -> None:
        self.writes: set[asyncio.Task[Any]] = set()

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.RATE_LIMITED:
            task = asyncio.get_running_loop().create_task(
                app.broker.client.rpush(LIMITED_KEY, repr(event.delay)))
            self.writes.add(task)
            task.add_done_callback(self.writes.discard)


if os.environ.get("FLOW_RECORD_LIMITED") == "1":
    app.add_middleware(_RecordLimited())


@queue.handler(concurrency=int(os.environ.get("FLOW_CONCURRENCY", "16")))
async def handle(msg: Message) -> None:
    payload: dict[str, Any] = msg.payload if isinstance(msg.payload, dict) else {}
    start = time.time()
    client = app.broker.client
    await client.rpush(STARTED_KEY, msg.id)
    pause = float(payload.get("sleep", SLEEP))
    if pause:
        await asyncio.sleep(pause)
    record = [msg.id, payload.get("key"), start, time.time(), os.getpid(), msg.attempts]
    await client.rpush(CALLS_KEY, orjson.dumps(record))
