"""A Tidings app for fault-injection tests, configured entirely from the environment.

Run it as a real process: ``tidings worker tests.apps.fault_app:app``. The usual
``TIDINGS_*`` variables (``TIDINGS_REDIS_URL``, ``TIDINGS_KEY_PREFIX`` ...) configure the
app; these knobs configure the queue and the handler:

``FAULT_QUEUE``           queue name (default ``faults``)
``FAULT_VT``              visibility timeout, seconds (default 2)
``FAULT_MAX_DELIVERIES``  deliveries before a message is poison (default 5)
``FAULT_MAX_ATTEMPTS``    retry policy attempts (default 5)
``FAULT_CONCURRENCY``     handler concurrency (default 16)
``FAULT_SLEEP``           seconds each handler call sleeps before finishing (default 0)
``FAULT_LATENCY``         ``1``: also record each message's publish-to-finish delay
``FAULT_ORDER``           ``1``: also append each finished message's ``tag`` payload field
                          to ``<prefix>:fault:order`` (a list: the order they finished in)
``FAULT_LEDGER_URL``      server the handler records to (default: the app's own server);
                          a separate one keeps handlers working while the broker is down

The handler records, under the key prefix so every test stays isolated:

``<prefix>:fault:started``  hash msg id -> times a handler was entered with it
``<prefix>:fault:done``     hash msg id -> times a handler finished it (it is acked next)
``<prefix>:fault:pids``     hash worker pid -> messages it finished
``<prefix>:fault:latency``  hash msg id -> ms from its publish to its last finish
                            (with ``FAULT_LATENCY=1``)

A payload ``{"fail": true}`` makes the handler raise (after recording the start); a
payload ``{"poison": true}`` makes the handler kill its own process with ``os._exit(1)``
(after recording the start), like a segfaulting C extension would.

The recording retries through connection errors for a bounded time: the tests measure
what tidings delivers, so a server outage must not turn into handler failures.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tidings import Message, Tidings

PREFIX = os.environ.get("TIDINGS_KEY_PREFIX", "tidings")
QUEUE = os.environ.get("FAULT_QUEUE", "faults")
SLEEP = float(os.environ.get("FAULT_SLEEP", "0"))
STARTED_KEY = f"{PREFIX}:fault:started"
DONE_KEY = f"{PREFIX}:fault:done"
PIDS_KEY = f"{PREFIX}:fault:pids"
LATENCY_KEY = f"{PREFIX}:fault:latency"
LATENCY = os.environ.get("FAULT_LATENCY") == "1"
ORDER_KEY = f"{PREFIX}:fault:order"
ORDER = os.environ.get("FAULT_ORDER") == "1"
RECORD_PATIENCE = 60.0  # seconds the recording keeps retrying through an outage
LEDGER_URL = os.environ.get("FAULT_LEDGER_URL")

app = Tidings()
queue = app.queue(
    QUEUE,
    visibility_timeout=float(os.environ.get("FAULT_VT", "2")),
    max_deliveries=int(os.environ.get("FAULT_MAX_DELIVERIES", "5")),
    max_attempts=int(os.environ.get("FAULT_MAX_ATTEMPTS", "5")),
)


_ledger: Redis | None = None


def _ledger_client() -> Redis:
    global _ledger
    if LEDGER_URL is None:
        return app.broker.client
    if _ledger is None:
        _ledger = Redis.from_url(LEDGER_URL)
    return _ledger


async def _record(*commands: tuple[Any, ...]) -> None:
    deadline = time.monotonic() + RECORD_PATIENCE
    while True:
        try:
            pipe = _ledger_client().pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            await pipe.execute()
            return
        except (RedisConnectionError, RedisTimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@queue.handler(concurrency=int(os.environ.get("FAULT_CONCURRENCY", "16")))
async def handle(msg: Message) -> None:
    await _record(("HINCRBY", STARTED_KEY, msg.id, 1))
    if isinstance(msg.payload, dict) and msg.payload.get("poison"):
        os._exit(1)
    if isinstance(msg.payload, dict) and msg.payload.get("fail"):
        raise RuntimeError("this message always fails")
    if SLEEP:
        await asyncio.sleep(SLEEP)
    done: list[tuple[Any, ...]] = [("HINCRBY", DONE_KEY, msg.id, 1),
                                   ("HINCRBY", PIDS_KEY, os.getpid(), 1)]
    if LATENCY:
        done.append(("HSET", LATENCY_KEY, msg.id, int(time.time() * 1000) - msg.created_at_ms))
    if ORDER and isinstance(msg.payload, dict):
        done.append(("RPUSH", ORDER_KEY, str(msg.payload.get("tag"))))
    await _record(*done)
