"""Deciding where one topic message goes: which bindings match its topic, which filters
pass, what each copy looks like. No server round trip here; :mod:`.topics` sends the plan
as one ``route.lua`` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .expressions import (
    FilterError,
    TransformError,
    Tree,
    context_plan,
    filter_context,
    merge_needs,
)
from .rules import CompiledBinding, RuleSet
from .transform import TransformFunction, apply_transform

# Headers every routed copy carries, so traces and the ledger link it to what was published.
TOPIC_HEADER = "tidings-topic"
ORIGIN_HEADER = "tidings-origin"  # the published message's id
BINDING_HEADER = "tidings-binding"
RULES_HEADER = "tidings-rules"  # the rule set version that routed it
ROUTING_KEY_HEADER = "tidings-routing-key"
REASON_HEADER = "tidings-route-reason"  # on what could not be routed


@dataclass(slots=True)
class PlannedCopy:
    """One binding's copy: its queue, payload, and idempotency key (scoped by binding)."""

    binding: CompiledBinding
    payload: Any
    idempotency_key: str


@dataclass(slots=True)
class PlannedFailure:
    """What goes to the unrouted queue's dead letters: ``binding`` None for no match."""

    binding: str | None
    reason: str  # "unrouted" | "transform_failed"
    error: str
    idempotency_key: str


@dataclass(slots=True)
class RoutePlan:
    """Where one message goes under one rule set version."""

    version: int
    copies: list[PlannedCopy] = field(default_factory=list)
    failures: list[PlannedFailure] = field(default_factory=list)
    filtered_out: list[str] = field(default_factory=list)
    filter_errors: dict[str, str] = field(default_factory=dict)
    dropped: bool = False

    def counters(self) -> dict[str, int]:
        """The routing stats this plan adds (the route script counts them with the copies)."""
        out: dict[str, int] = {"published": 1}
        for planned in self.copies:
            name = planned.binding.counter
            out[name] = out.get(name, 0) + 1
        if self.copies:
            out["routed"] = len(self.copies)
        for name in self.filter_errors:
            out[f"filter_errors:{name}"] = 1
        for failure in self.failures:
            key = "unrouted" if failure.binding is None else f"transform_failed:{failure.binding}"
            out[key] = out.get(key, 0) + 1
        if self.dropped:
            out["dropped"] = 1
        return out


Matched = tuple[list[CompiledBinding], dict[str, Tree | None]]


class Matcher:
    """The bindings of one rule set that match a topic, and what their filters read,
    cached per topic (bounded)."""

    __slots__ = ("_cache", "_limit", "rules")

    def __init__(self, rules: RuleSet, limit: int) -> None:
        self.rules, self._limit = rules, limit
        self._cache: dict[str, Matched] = {}

    def __call__(self, topic: str) -> Matched:
        found = self._cache.get(topic)
        if found is None:
            bindings = self.rules.matching(topic)
            found = bindings, context_plan(merge_needs([b.filter for b in bindings
                                                        if b.filter is not None]))
            if len(self._cache) >= self._limit:
                self._cache.clear()  # a burst of one-off topics: start over, stay bounded
            if self._limit:
                self._cache[topic] = found
        return found


def plan_route(matcher: Matcher, variables: dict[str, Any], base_key: str,
               functions: Mapping[str, TransformFunction]) -> RoutePlan:
    """The plan for the message ``variables`` describes (``payload``, ``headers``,
    ``topic``, ``routing_key``, ``priority``). ``base_key``: the published message's
    idempotency key, else its id: every copy's key derives from it and its binding, so a
    message routed again (after a timeout, a conflict, a crash) adds no second copy."""
    rules = matcher.rules
    plan = RoutePlan(rules.version)
    context = None
    bindings, needs = matcher(variables["topic"])
    for compiled in bindings:
        name = compiled.binding.name
        if compiled.filter is not None:
            if context is None:
                context = filter_context(variables, needs)
            try:
                passed = compiled.filter.matches(context)
            except FilterError as exc:
                plan.filter_errors[name] = str(exc)
                passed = False
            if not passed:
                plan.filtered_out.append(name)
                continue
        try:
            key = base_key if compiled.idempotency is None else compiled.idempotency.render(
                variables, "idempotency_key")
            payload = apply_transform(compiled, variables, functions)
        except TransformError as exc:
            plan.failures.append(PlannedFailure(name, "transform_failed", str(exc),
                                                f"route:{name}:{base_key}"))
            continue
        plan.copies.append(PlannedCopy(compiled, payload, f"route:{name}:{key}"))
    if not plan.copies and not plan.failures:
        if rules.unrouted == "drop":
            plan.dropped = True
        else:
            reason = ("no binding matches the topic" if not plan.filtered_out else
                      f"filtered out by {', '.join(plan.filtered_out)}")
            plan.failures.append(PlannedFailure(None, "unrouted", reason,
                                                f"route:-unrouted:{base_key}"))
    return plan
