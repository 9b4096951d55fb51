"""Suspect messages run alone in their process, so a crash can be blamed on one message.

Every delivery of a stream entry increments its delivery counter, and settling deletes the
entry, so a counter above 1 means a consumer took the entry and never settled it: its
process died (or stalled) while holding it. When a message kills its process, every
message the process held dies with it and comes back with a higher count; counting those
deliveries alike would dead-letter innocent messages as poison along with the culprit.

So from delivery :func:`isolate_from` on, a message is a suspect: reclaim skips it until
the process holds nothing else. The runner that saw it stops the whole process from
fetching and reclaiming, lets the handlers already running finish (and the reclaimed
messages already held), then claims the suspect alone and runs it with nothing beside it.
If the process dies now, only the suspect is charged. The first redelivery after an
ordinary crash (a kill -9 during a deploy, the OOM killer) still runs concurrently, so a
routine crash costs no throughput; only a message held twice by a dying process (once,
with ``max_deliveries=2``) is isolated. Every message is delivered alone at least once
before it can be judged poison, and an innocent message is charged at most twice (once
with ``max_deliveries=2``), so it is never judged poison when ``max_deliveries >= 2``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runner import QueueRunner
    from .worker import Worker

IDLE_RECHECK = 0.25  # seconds; a guard against a missed wake-up, not the normal path


def isolate_from(max_deliveries: int) -> int:
    """The first delivery count at which a message runs alone (see the module docstring)."""
    return max(2, min(3, max_deliveries))


class Isolation:
    """The process-wide state of suspect handling; at most one suspect at a time."""

    __slots__ = ("_changed", "active", "wanted_by", "worker")

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        # A runner saw a suspect: nothing new is fetched or reclaimed until it ran.
        self.wanted_by: QueueRunner | None = None
        self.active = False  # the suspect runs: nothing else may start
        self._changed = asyncio.Event()

    @property
    def holding_back(self) -> bool:
        """True while runners must not fetch or reclaim anything new."""
        return self.wanted_by is not None or self.active

    def want(self, runner: QueueRunner) -> None:
        if self.wanted_by is None and not self.active:
            self.wanted_by = runner
            runner.wake_fetch()  # its fetch loop runs the suspect protocol
            runner.capacity.set()

    def handler_finished(self) -> None:
        if self.wanted_by is not None:
            self._changed.set()

    def idle(self) -> bool:
        """Nothing runs and nothing reclaimed waits, in any runner of the process."""
        return self.worker.running == 0 and not any(r.reclaimed for r in self.worker.runners)

    async def until_idle(self) -> bool:
        """Wait until :meth:`idle`; False if the worker stops first."""
        while not self.idle():
            if self.worker.stopping:
                return False
            self._changed.clear()
            stop = asyncio.ensure_future(self.worker.stopped.wait())
            changed = asyncio.ensure_future(self._changed.wait())
            await asyncio.wait([stop, changed], timeout=IDLE_RECHECK,
                               return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            changed.cancel()
        return not self.worker.stopping

    def done(self) -> None:
        self.wanted_by = None
        self.active = False
        self.worker.wake_all(force=True)
