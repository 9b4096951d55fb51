"""Throughput and error history for the overview's sparklines, and their inline SVG.

The server keeps counters (acked, retried, dead-lettered, expired per queue), not rates:
the dashboard samples them each time the overview refreshes (at most once per refresh
interval) and keeps the last ``size`` samples per queue in memory, so a sparkline starts
empty when the dashboard process starts and fills while someone looks at it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup

FAILED = ("retried", "dead_lettered", "expired")


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # seconds (the server's clock)
    acked: int
    failed: int


class History:
    """The last ``size`` counter samples of every queue."""

    def __init__(self, size: int = 60, every: float = 2.0) -> None:
        self.size = size
        self.every = every
        self._samples: dict[str, deque[Sample]] = {}

    def add(self, queue: str, at: float, counters: Mapping[str, int]) -> None:
        """Record ``counters`` taken at ``at``, unless the last sample is too recent."""
        samples = self._samples.setdefault(queue, deque(maxlen=self.size))
        if samples and at - samples[-1].at < self.every * 0.9:
            return
        failed = sum(counters.get(name, 0) for name in FAILED)
        samples.append(Sample(at, counters.get("acked", 0), failed))

    def rates(self, queue: str) -> tuple[list[float], list[float]]:
        """Messages per second between samples: (acked, failed), oldest first."""
        samples = list(self._samples.get(queue, ()))
        acked: list[float] = []
        failed: list[float] = []
        for before, after in itertools.pairwise(samples):
            span = max(after.at - before.at, 1e-3)
            # A counter that went down (a queue deleted and declared again) restarts at 0.
            acked.append(max(0, after.acked - before.acked) / span)
            failed.append(max(0, after.failed - before.failed) / span)
        return acked, failed


def _points(values: Sequence[float], top: float, width: int, height: int) -> str:
    if len(values) == 1:
        values = [values[0], values[0]]
    step = width / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}"
                    for i, v in enumerate(values))


def sparkline(acked: Sequence[float], failed: Sequence[float], *, width: int = 120,
              height: int = 28) -> Markup:
    """An inline SVG of two series on one scale: throughput, and errors in red."""
    label = (f"{acked[-1]:.1f} msg/s, {failed[-1]:.1f} errors/s" if acked
             else "no samples yet")
    head = (f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{label}"><title>{label}</title>')
    if not acked:
        return Markup(head + f'<line x1="0" y1="{height - 1}" x2="{width}" '
                      f'y2="{height - 1}" class="spark-none"/></svg>')
    top = max(1.0, *acked, *failed)
    return Markup(
        head + f'<polyline class="spark-ok" points="{_points(acked, top, width, height)}"/>'
        f'<polyline class="spark-err" points="{_points(failed, top, width, height)}"/></svg>')
