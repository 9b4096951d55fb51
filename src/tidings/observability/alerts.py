"""Prometheus alerting rules generated from the alert thresholds (``tidings alerts rules``).

Each threshold (:class:`tidings.core.thresholds.AlertThresholds`) becomes one rule for
the queues that keep the default, matched with ``queue!~"a|b"``, and one rule per queue
that overrides it, matched with ``queue="a"``; a threshold that is off (None) makes no
rule. :data:`ALERTS` describes each alert once: the rule generator here and the
in-process evaluator (:mod:`tidings.observability.evaluator`) both read it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from ..core.keys import LANE_NAMES
from ..core.thresholds import AlertSettings, AlertThresholds


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """One alert: its name, what it watches, how bad it is, and its PromQL."""

    name: str
    threshold: Callable[[AlertThresholds], float | None]
    expr: str  # {sel}: the queue selector; {value}, {window}: filled per rule
    summary: str
    severity: str = "warning"
    lane: str | None = None
    holds_for: Callable[[AlertThresholds], float] = lambda t: t.pending_for
    per_queue: bool = True


def _age(lane: str) -> AlertSpec:
    return AlertSpec(
        "TidingsOldestMessageAge", lambda t: t.oldest_age(lane),
        "max by (queue, lane) (tidings_queue_oldest_message_age_seconds"
        f'{{lane="{lane}"@sel}}) > @value',
        f"the oldest {lane} message of {{{{ $labels.queue }}}} has waited "
        "{{ $value | humanizeDuration }} (threshold @values)",
        severity="critical" if lane == "high" else "warning", lane=lane)


# Placeholders, filled per rule: @sel (the queue selector), @value, @window, @for.
ALERTS: tuple[AlertSpec, ...] = (
    *(_age(lane) for lane in LANE_NAMES),
    AlertSpec("TidingsQueueDepth", lambda t: t.depth,
              "sum by (queue) (tidings_queue_depth_messages{@sel}) > @value",
              "{{ $labels.queue }} has {{ $value }} messages waiting (threshold @value)"),
    AlertSpec("TidingsDeadLettersGrowing", lambda t: t.dlq_growth,
              # max by queue: the reporter may have changed in between (another instance).
              "max by (queue) (tidings_queue_dead_letters{@sel}) - max by (queue) "
              "(tidings_queue_dead_letters{@sel} offset @window) > @value",
              "the dead-letter queue of {{ $labels.queue }} grew by {{ $value }} in @window"),
    AlertSpec("TidingsErrorRatio", lambda t: t.error_ratio,
              "sum by (queue) (rate(tidings_handler_errors_total{@sel}[@window]))"
              " / sum by (queue) (rate(tidings_handler_duration_seconds_count{@sel}"
              "[@window])) > @value",
              "{{ $value | humanizePercentage }} of the handler calls of {{ $labels.queue }} "
              "failed over @window (threshold @value)"),
    AlertSpec("TidingsNoConsumers", lambda t: 0 if t.no_consumers_for else None,
              "max by (queue) (tidings_queue_consumers{@sel}) == @value",
              "no worker consumes {{ $labels.queue }}", severity="critical",
              holds_for=lambda t: t.no_consumers_for or 0),
    AlertSpec("TidingsBreakerOpen", lambda t: 1 if t.breaker_open_for else None,
              "max by (breaker) (tidings_breaker_state) >= @value",
              "circuit breaker {{ $labels.breaker }} has not closed for @for",
              holds_for=lambda t: t.breaker_open_for or 0, per_queue=False),
    AlertSpec("TidingsLeaseLost", lambda t: t.lease_lost_per_minute,
              "sum by (queue) (rate(tidings_messages_lease_lost_total{@sel}[@window]))"
              " * 60 > @value",
              "workers of {{ $labels.queue }} lose {{ $value }} leases a minute (threshold "
              "@value): handlers outlive the visibility timeout, or workers stall"),
)


def _fill(template: str, values: dict[str, str]) -> str:
    for name in ("sel", "value", "window", "for"):  # "value" before... none is a prefix
        template = template.replace(f"@{name}", values[name])
    return template


def _duration(seconds: float) -> str:
    """A Prometheus duration: 30s, 5m, 1h."""
    whole = round(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _regex(names: list[str]) -> str:
    # Queue names allow only [A-Za-z0-9_.-]; of those only "." means something in RE2.
    return "|".join(name.replace(".", "\\\\.") for name in names)


def _scopes(settings: AlertSettings, spec: AlertSpec
            ) -> Iterator[tuple[str, str, AlertThresholds]]:
    """(scope, selector, thresholds): the default scope, then each queue overriding it."""
    default = settings.for_queue("")
    if not spec.per_queue:
        yield "default", "", default
        return
    special = sorted(name for name in settings.queues
                     if _key(spec, settings.for_queue(name)) != _key(spec, default))
    yield "default", (f'queue!~"{_regex(special)}"' if special else ""), default
    for name in special:
        yield name, f'queue="{name}"', settings.for_queue(name)


def _key(spec: AlertSpec, t: AlertThresholds) -> tuple[Any, ...]:
    return spec.threshold(t), spec.holds_for(t), t.window


def rules(settings: AlertSettings) -> dict[str, Any]:
    """The rules file as data: one group ``tidings`` of alerting rules."""
    out: list[dict[str, Any]] = []
    for spec in ALERTS:
        for scope, selector, thresholds in _scopes(settings, spec):
            value = spec.threshold(thresholds)
            if value is None:
                continue
            fill = {"value": _number(value), "window": _duration(thresholds.window),
                    "for": _duration(spec.holds_for(thresholds)),
                    "sel": f", {selector}" if selector and spec.lane else selector}
            # The scope tells the default rule from a queue's own (promtool wants them apart).
            labels = {"severity": spec.severity, "scope": scope,
                      **({"lane": spec.lane} if spec.lane else {})}
            out.append({"alert": spec.name, "expr": _fill(spec.expr, fill),
                        "for": fill["for"], "labels": labels,
                        "annotations": {"summary": _fill(spec.summary, fill)}})
    return {"groups": [{"name": "tidings", "rules": out}]}


def rules_yaml(settings: AlertSettings) -> str:
    """The rules file (``tidings alerts rules > tidings-rules.yml``)."""
    header = ("# Generated by `tidings alerts rules` from the alert thresholds; regenerate it "
              "when they change.\n")
    return header + yaml.safe_dump(rules(settings), sort_keys=False, width=200)
