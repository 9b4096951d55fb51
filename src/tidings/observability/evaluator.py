"""The in-process alert evaluator, for users without Prometheus.

Every ``every`` seconds it reads the fleet's figures from Redis (the snapshot behind
``tidings stats``), checks each alert of :data:`tidings.observability.alerts.ALERTS`
against the queue's thresholds, and emits an ``alert_firing`` event once a condition has
held for the alert's ``for`` duration and an ``alert_resolved`` event once it stops, through
the middleware (so the JSON log, a webhook or the analytics hook carry it). The error
ratio and the dead-letter growth are fleet-wide (the server-side counters over the
window); the lease-lost rate is this process's (from :class:`ProcessMetrics`, if given).

In a worker, only the fleet reporter (the worker holding :class:`ReporterLease`)
evaluates, so the fleet raises each alert once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.events import EventKind
from ..core.middleware import Middleware, WorkerView
from ..core.thresholds import AlertSettings, AlertThresholds
from ..queues.host import ExtensionHost
from .alerts import ALERTS, AlertSpec
from .fleet import BreakerSource, FleetSnapshot, QueueFigures, ReporterLease, read_fleet
from .metrics import ProcessMetrics

log = logging.getLogger("tidings.observability")
_SPECS = {(spec.name, spec.lane): spec for spec in ALERTS}
_FAILED = ("retried", "dead_lettered")
_HANDLED = ("acked", "retried", "dead_lettered", "snoozed")
AlertKey = tuple[str, str, str | None]  # alert, subject (queue or breaker), lane
Condition = tuple[AlertKey, tuple[bool, str, float]]  # key, (holding, detail, for seconds)


@dataclass(slots=True)
class AlertState:
    since: float  # monotonic seconds the condition has held since
    firing: bool = False


class AlertEvaluator(Middleware):
    """Evaluates the alert thresholds in-process (see the module docstring)."""

    def __init__(self, app: ExtensionHost, settings: AlertSettings | None = None, *,
                 every: float = 15.0, metrics: ProcessMetrics | None = None,
                 breakers: BreakerSource | None = None) -> None:
        self.app = app
        self.settings = settings or app.settings.alerts
        self.every = every
        self.metrics = metrics
        self.breakers = breakers
        self.states: dict[AlertKey, AlertState] = {}
        self.history: deque[tuple[float, FleetSnapshot, dict[str, int]]] = deque()

    @property
    def firing(self) -> list[AlertKey]:
        """(alert, subject, lane) of every alert firing now."""
        return [key for key, state in self.states.items() if state.firing]

    async def worker_loop(self, worker: WorkerView) -> None:
        lease = ReporterLease(self.app, worker.consumer)
        while not worker.stopping:
            try:
                if await lease.claim():
                    await self.tick()
            except Exception as exc:  # Redis away: try again next round
                log.warning("alert evaluation failed: %s", exc)
            await self.app.clock.sleep(self.every)

    async def tick(self) -> None:
        """One evaluation: read the fleet, update every alert, emit the changes."""
        snapshot = await read_fleet(self.app, breakers=self.breakers)
        now = self.app.clock.monotonic()
        self.history.append((now, snapshot, self._lease_lost()))
        conditions = dict(self._conditions(snapshot, now))
        for key, (holding, detail, holds_for) in conditions.items():
            self._update(key, holding, detail, holds_for, now)
        for key in [k for k in self.states if k not in conditions]:  # queue gone
            self._update(key, False, "no longer reported", 0.0, now)

    def _update(self, key: AlertKey, holding: bool, detail: str,
                holds_for: float, now: float) -> None:
        state = self.states.get(key)
        if not holding:
            if state is not None:
                del self.states[key]
                if state.firing:
                    self._emit(EventKind.ALERT_RESOLVED, key, detail)
            return
        if state is None:
            state = self.states[key] = AlertState(now)
        if not state.firing and now - state.since >= holds_for:
            state.firing = True
            self._emit(EventKind.ALERT_FIRING, key, detail)

    def _emit(self, kind: EventKind, key: AlertKey, detail: str) -> None:
        name, subject, lane = key
        self.app.middleware.event(kind, subject, "", reason=name, error=detail,
                                  priority=lane or "normal")

    # -- conditions ----------------------------------------------------------------------

    def _conditions(self, snap: FleetSnapshot, now: float) -> Iterator[Condition]:
        """((alert, subject, lane), (holding, detail, for seconds)) for each alert."""
        for q in snap.queues:
            t = self.settings.for_queue(q.name)
            for (name, lane), spec in _SPECS.items():
                if not spec.per_queue:
                    continue
                limit = spec.threshold(t)
                if limit is None:
                    continue
                value = self._value(name, lane, q, t, now)
                if value is None:
                    continue
                holding = value == limit if name == "TidingsNoConsumers" else value > limit
                yield (name, q.name, lane), (holding, _detail(spec, value, limit),
                                             spec.holds_for(t))
        breaker = _SPECS[("TidingsBreakerOpen", None)]
        default = self.settings.for_queue("")
        if breaker.threshold(default) is not None:
            for name, state in snap.breakers.items():
                yield (breaker.name, name, None), (state != "closed", f"breaker {name} is "
                                                   f"{state}", breaker.holds_for(default))

    def _value(self, name: str, lane: str | None, q: QueueFigures, t: AlertThresholds,
               now: float) -> float | None:
        if name == "TidingsOldestMessageAge":
            assert lane is not None
            return q.lanes[lane].oldest_age or 0.0
        if name == "TidingsQueueDepth":
            return q.depth
        if name == "TidingsNoConsumers":
            return q.consumers
        past = self._window_start(now, t.window)
        if past is None:
            return None
        before = next((f for f in past[1].queues if f.name == q.name), None)
        if before is None:
            return None
        if name == "TidingsDeadLettersGrowing":
            return q.dead - before.dead
        if name == "TidingsErrorRatio":
            handled = _delta(q, before, _HANDLED)
            return _delta(q, before, _FAILED) / handled if handled > 0 else None
        if name == "TidingsLeaseLost" and self.metrics is not None:
            minutes = max(now - past[0], 1.0) / 60
            lost = self._lease_lost()
            return (lost.get(q.name, 0) - past[2].get(q.name, 0)) / minutes
        return None

    def _window_start(self, now: float, window: float
                      ) -> tuple[float, FleetSnapshot, dict[str, int]] | None:
        """The oldest sample within ``window`` (older ones are dropped); None: only now."""
        while len(self.history) > 1 and now - self.history[1][0] >= window:
            self.history.popleft()
        return self.history[0] if len(self.history) > 1 else None

    def _lease_lost(self) -> dict[str, int]:
        """Leases this process lost so far, by queue."""
        lost: dict[str, int] = {}
        for (kind, queue, _), count in (self.metrics.counts.items() if self.metrics else ()):
            if kind is EventKind.LEASE_LOST:
                lost[queue] = lost.get(queue, 0) + count
        return lost


def _delta(now: QueueFigures, before: QueueFigures, names: tuple[str, ...]) -> int:
    return sum(now.counters.get(n, 0) - before.counters.get(n, 0) for n in names)


def _detail(spec: AlertSpec, value: float, limit: float) -> str:
    shown = round(value, 3) if isinstance(value, float) else value
    return f"{spec.name}{f' ({spec.lane} lane)' if spec.lane else ''}: {shown} against {limit}"
