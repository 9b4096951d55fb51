"""Pausing a queue, or one key of it, on every worker; paused messages stay queued.

::

    await pause_queue(email)                  # or: await app.flow.pause("email")
    await resume_queue(email)
    app.flow.pausable(email, key=lambda m: m.payload["tenant"])
    await pause_queue(email, key="acme")      # only acme's messages wait

A queue's pause is the field ``paused`` of its config hash; every worker's fetch gate
reads it at most once per ``check_every`` second (default 1 s) and fetches nothing while
it is set. Messages already running finish; nothing else is taken.

A key's pause is a member of the queue's paused-keys set. A message of a paused key is
parked: put back (``Snooze``, no attempt spent) for a delay that doubles each time it is
parked (1 s up to 60 s), and recorded, so resuming the key makes every parked message due
at once instead of waiting out its snooze. Keys need a key function
(``app.flow.pausable(queue, key=...)``) and apply to single-message handlers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import Snooze
from ..core.message import Message
from ..engine.broker import text
from ..engine.scripts import Script
from ._guard import GATE_PAUSE, WRAP_PAUSE, Call, Guard, KeyFn, key_of, sleep_for

if TYPE_CHECKING:
    from ..queues.queue import Queue
    from .control import FlowControl

_PARK = Script("key_park")
_RESUME = Script("key_resume")
PAUSED_FIELD = "paused"


def paused_keys_key(queue: Queue) -> str:
    return f"{queue.app.settings.key_prefix}:{{{queue.name}}}:paused-keys"


def parked_key(queue: Queue, key: str) -> str:
    return f"{queue.app.settings.key_prefix}:{{{queue.name}}}:parked:{key}"


@dataclass(slots=True, frozen=True)
class PauseState:
    """Whether a queue is paused, and which of its keys are."""

    queue: str
    paused: bool
    keys: list[str]


async def pause_queue(queue: Queue, key: str | None = None) -> None:
    """Stop every worker from taking messages of ``queue`` (or only of ``key``)."""
    client = queue.app.broker.client
    if key is None:
        await client.hset(queue.keys[11], PAUSED_FIELD, str(int(time.time())))
    else:
        await client.sadd(paused_keys_key(queue), key)


async def resume_queue(queue: Queue, key: str | None = None) -> int:
    """Undo :func:`pause_queue`; for a key, returns how many parked messages were made due."""
    client = queue.app.broker.client
    if key is None:
        await client.hdel(queue.keys[11], PAUSED_FIELD)
        return 0
    keys = [*queue.keys, paused_keys_key(queue), parked_key(queue, key)]
    return int(await _RESUME(client, keys, [key]))


async def pause_state(queue: Queue) -> PauseState:
    client = queue.app.broker.client
    paused = await client.hexists(queue.keys[11], PAUSED_FIELD)
    keys = sorted(text(k) for k in await client.smembers(paused_keys_key(queue)))
    return PauseState(queue.name, bool(paused), keys)


class PauseGuard(Guard):
    """The fetch gate of queue pauses; the flow control puts it on every queue."""

    gate_stage = GATE_PAUSE

    def __init__(self, flow: FlowControl, check_every: float = 1.0) -> None:
        self.flow = flow
        self.check_every = check_every
        self._seen: dict[str, tuple[float, bool]] = {}  # queue -> (read at, paused)

    async def admit(self, queue: Queue, free: int) -> int:
        read_at, paused = self._seen.get(queue.name, (-math.inf, False))
        now = time.monotonic()
        if now - read_at >= self.check_every:
            paused = bool(await queue.app.broker.client.hexists(queue.keys[11], PAUSED_FIELD))
            self._seen[queue.name] = (now, paused)
        if paused:
            await sleep_for(self.check_every)
            return 0
        return free


class KeyPauseGuard(Guard):
    """Parks the messages of paused keys of one queue; see the module docstring."""

    wrap_stage = WRAP_PAUSE

    def __init__(self, flow: FlowControl, queue: Queue, key: KeyFn, *,
                 check_every: float = 1.0, snooze: float = 1.0,
                 max_snooze: float = 60.0) -> None:
        self.flow = flow
        self.queue = queue
        self.key = key
        self.check_every = check_every
        self.snooze = snooze
        self.max_snooze = max_snooze
        self._keys: set[str] = set()
        self._read_at = -math.inf

    async def around(self, message: Message | list[Message], call_next: Call) -> Any:
        if isinstance(message, list):
            return await call_next()
        key = key_of(self.key, message)
        if key is None or key not in await self._paused():
            return await call_next()
        # The cached set said paused; the script decides, so a resume is never missed.
        client = self.queue.app.broker.client
        times = int(await _PARK(client, [paused_keys_key(self.queue),
                                         parked_key(self.queue, key)], [key, message.id]))
        if not times:
            self._read_at = -math.inf
            return await call_next()
        raise Snooze(min(self.max_snooze, self.snooze * 2 ** (times - 1)))

    async def _paused(self) -> set[str]:
        now = time.monotonic()
        if now - self._read_at >= self.check_every:
            members = await self.queue.app.broker.client.smembers(paused_keys_key(self.queue))
            self._keys = {text(m) for m in members}
            self._read_at = now
        return self._keys
