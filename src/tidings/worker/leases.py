"""Leases of one queue runner: heartbeat (renewal, run-time config), reclaim, leaving.

The heartbeat's reply carries the queue's config hash: lane weights (``set_weights``) and
the retry override (``set_retry``) apply from the next heartbeat, so within
``min(10 s, visibility_timeout / 3)`` of the change on every running worker.

The heartbeat renews every lease the runner holds, every third of the visibility
timeout. Reclaiming runs in a loop of its own, because it passes the fetch gates, which may
wait (a pause, a rate limit), and a late heartbeat would cost the worker its leases.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from ..core.config import RETRY_FIELD, RetryPolicy, retry_with
from ..core.errors import ValidationError
from ..core.keys import GROUP
from ..core.stored import text
from ..engine.connection import TRANSIENT
from ..queues import scripts
from .allocation import parse_weights
from .backoff import Backoff
from .isolation import isolate_from

if TYPE_CHECKING:
    from .runner import QueueRunner

log = logging.getLogger("tidings.worker")
MAX_RECLAIM = 1000  # entries per reclaim call (the script claims them in one XCLAIM)


class Leases:
    """Renews, reclaims and finally gives back the leases of one :class:`QueueRunner`."""

    def __init__(self, runner: QueueRunner) -> None:
        self.runner = runner

    async def heartbeat(self) -> None:
        runner = self.runner
        items = list(runner.in_flight.items())
        lost, config = await scripts.extend(
            runner.channel, runner.keys, consumer=runner.worker.consumer,
            leases=[(msg.lane, msg.entry_id, msg.delivery) for _, msg in items])
        for index in lost:
            key, msg = items[index - 1]
            # A message whose settle is under way may have been settled by the server just
            # before this renewal ran: that settle's own reply decides, not this one.
            held = runner.in_flight.get(key)
            if held is not None and held is msg and key not in runner.settling:
                runner.lease_lost(key, held)
        settings = dict(zip(config[::2], config[1::2], strict=True))
        weights = parse_weights(settings.get(b"weights"))
        runner.allocator.set_weights(weights or runner.config.weights)
        runner.retry = self._retry(settings.get(RETRY_FIELD.encode()))

    def _retry(self, raw: bytes | None) -> RetryPolicy:
        """The code's retry policy with the run-time override (``Queue.set_retry``)."""
        runner = self.runner
        if raw is None:
            return runner.config.retry
        try:
            changes = json.loads(raw)
            return retry_with(runner.config.retry, changes if isinstance(changes, dict) else {})
        except (ValueError, ValidationError) as exc:  # written by hand, or by a newer release
            if raw != runner.bad_retry:
                log.warning("ignoring the retry override of %s (%s)", runner.queue.name, exc)
                runner.bad_retry = raw
            return runner.config.retry

    async def reclaim(self) -> None:
        """Take over entries whose consumer stopped renewing them, whatever our backlog.

        Reclaimed messages were delivered before anything queued after them, so they go
        first: they wait in the runner's reclaimed line, leased and renewed, and start
        before the next fetch. The line holds at most one runner's worth (its handler
        slots), so a worker never hoards what others could run. Suspects (isolation.py)
        are left for the runner to claim alone once its process is idle.
        """
        runner = self.runner
        if runner.worker.stopping:
            return
        isolation = runner.worker.isolation
        want = 0 if isolation.holding_back else min(
            MAX_RECLAIM, max(0, runner.limit - len(runner.reclaimed)))
        if want and runner.bus.gates:
            # Reclaimed messages are deliveries too: a paused or rate-limited queue must not
            # take them behind its gates' back. Gates may spend (rate tokens), so ask them
            # only for what is reclaimable right now.
            reclaimable = await self._reclaimable(want)
            want = await runner.admitted(reclaimable) if reclaimable else 0
        # Even with nothing to take, the script still removes dead consumers.
        delivered, dropped, removed, suspects = await self.claim(want)
        if dropped:
            runner.report_dropped(dropped)
        if delivered:
            log.info("reclaimed %d expired leases on %s", len(delivered), runner.queue.name)
            runner.take_reclaimed(delivered)
        if suspects:
            isolation.want(runner)
        for name in removed:
            log.info("removed dead consumer %s from %s", text(name), runner.queue.name)

    async def claim(self, count: int, suspect: bool = False) -> Any:
        """Run reclaim.lua: up to ``count`` entries, or (``suspect``) one suspect alone."""
        runner = self.runner
        config = runner.config
        vt_ms = int(config.visibility_timeout * 1000)
        return await scripts.reclaim(
            runner.channel, runner.keys, consumer=runner.worker.consumer, min_idle_ms=vt_ms,
            count=count, max_deliveries=config.max_deliveries,
            on_expire=config.on_expire.value, dead_after_ms=max(3 * vt_ms, 10_000),
            isolate_from=isolate_from(config.max_deliveries), suspect=suspect)

    async def _reclaimable(self, limit: int) -> int:
        """How many (up to ``limit``) entries have gone unrenewed past the lease."""
        runner = self.runner
        vt_ms = int(runner.config.visibility_timeout * 1000)
        pipe = runner.client.pipeline(transaction=False)
        for lane_key in runner.keys.lanes:
            pipe.xpending_range(lane_key, GROUP, "-", "+", limit, idle=vt_ms)
        return sum(len(found) for found in await pipe.execute())

    async def deregister(self) -> None:
        """Leave the consumer group, unless we still hold entries (then reclaim gets them)."""
        runner = self.runner
        consumer = runner.worker.consumer
        pipe = runner.client.pipeline(transaction=False)
        for lane_key in runner.keys.lanes:
            pipe.xpending_range(lane_key, GROUP, "-", "+", 1, consumername=consumer)
        held = sum(len(r) for r in await pipe.execute())
        if held:
            log.warning("%s still holds %d entries of %s; they will be reclaimed", consumer,
                        held, runner.queue.name)
            return
        pipe = runner.client.pipeline(transaction=False)
        for lane_key in runner.keys.lanes:
            pipe.xgroup_delconsumer(lane_key, GROUP, consumer)
        pipe.zrem(runner.keys.consumers, consumer)
        await pipe.execute()

    async def every(self, interval: float, step: Callable[[], Awaitable[None]],
                    what: str) -> None:
        """Run ``step`` every ``interval`` seconds for ever, through server trouble."""
        runner = self.runner
        backoff = Backoff(runner.clock)
        while True:
            try:
                await step()
                backoff.reset()
            except TRANSIENT as exc:
                await backoff.wait(f"{what} on {runner.queue.name}", exc)
                continue
            except ResponseError as exc:
                await runner.refused(f"{what} on {runner.queue.name}", exc, backoff)
                continue
            await runner.clock.sleep(interval)
