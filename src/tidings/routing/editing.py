"""Changing the rules from Python (``app.topics.bind(...)``) and the CLI (``tidings
routes ...``): each change is one new version, audited, and announced to every producer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..core.errors import RouteError, RouteNotFoundError
from ..core.stored import text
from ..queues.host import ExtensionHost
from .rules import Binding, RuleSet
from .store import AuditEntry, RuleStore


class RuleEditing:
    """The rule-editing half of :class:`~tidings.routing.Topics`."""

    def __init__(self, app: ExtensionHost, store: RuleStore) -> None:
        self.app, self.store = app, store

    async def _ready(self) -> None:
        if not self.app.broker.connected:
            await self.app.connect()

    async def rules(self) -> RuleSet:
        """The stored rule set, read now."""
        await self._ready()
        return await self.store.load()

    async def bind(self, name: str, topic: str, queue: str, *, replace_existing: bool = False,
                   actor: str | None = None, **options: Any) -> RuleSet:
        """Add binding ``name``: messages to ``topic`` (a pattern: ``*`` one word, ``#``
        any number) go to ``queue``. Options are the other :class:`Binding` fields
        (``filter``, ``priority``, ``delay``, ``ttl``, ``idempotency_key``, ``transform``
        (a dict of :class:`Transform` steps), ``schema``). A name in use is refused unless
        ``replace_existing``. Returns the new rule set."""
        binding = Binding.from_dict({"name": name, "topic": topic, "queue": queue, **options})

        def edit(rules: RuleSet) -> RuleSet:
            if rules.binding(name) is not None and not replace_existing:
                raise RouteError(f"bindings[{name}].name", "a binding has this name; remove "
                                 "it first or pass replace_existing=True")
            kept = [binding if b.name == name else b for b in rules.bindings]
            if rules.binding(name) is None:
                kept.append(binding)
            return replace(rules, bindings=tuple(kept), compiled=())

        await self._ready()
        action = "replace" if replace_existing else "add"
        return await self.store.change(edit, action=action, detail=_describe(binding),
                                       actor=actor)

    async def unbind(self, name: str, *, actor: str | None = None) -> RuleSet:
        """Remove binding ``name`` (RouteNotFoundError if there is none)."""
        def edit(rules: RuleSet) -> RuleSet:
            if rules.binding(name) is None:
                raise RouteNotFoundError(f"no binding {name!r}")
            return replace(rules, bindings=tuple(b for b in rules.bindings if b.name != name),
                           compiled=())

        await self._ready()
        return await self.store.change(edit, action="remove", detail=name, actor=actor)

    async def set_unrouted(self, action: str, queue: str | None = None, *,
                           actor: str | None = None) -> RuleSet:
        """What becomes of a message no binding takes: ``"queue"`` (a dead letter of the
        unrouted queue, with its reason) or ``"drop"`` (counted as ``dropped``)."""
        def edit(rules: RuleSet) -> RuleSet:
            return replace(rules, unrouted=action, unrouted_queue=queue or rules.unrouted_queue,
                           compiled=())

        await self._ready()
        return await self.store.change(edit, action="unrouted",
                                       detail=f"{action} {queue or ''}".strip(), actor=actor)

    async def replace_rules(self, rules: RuleSet | dict[str, Any], *,
                            actor: str | None = None) -> RuleSet:
        """Save ``rules`` (a RuleSet or its dict, e.g. from a file) as the next version."""
        new = rules if isinstance(rules, RuleSet) else RuleSet.from_dict(rules)
        await self._ready()
        return await self.store.change(lambda _: new, action="replace-all",
                                       detail=f"{len(new.bindings)} bindings", actor=actor)

    async def rollback(self, version: int, *, actor: str | None = None) -> RuleSet:
        """Save the rules as they were at ``version`` as the next version (history kept)."""
        await self._ready()
        old = await self.store.at_version(version)
        return await self.store.change(lambda _: old, action="rollback",
                                       detail=f"to version {version}", actor=actor)

    async def history(self, limit: int = 50) -> list[AuditEntry]:
        """The latest rule changes, newest first: version, actor, action, detail, time."""
        await self._ready()
        return await self.store.audit(limit)

    async def routing_stats(self) -> dict[str, int]:
        """The fleet's routing counters: published, routed, unrouted, dropped, and per
        binding ``routed:NAME``, ``filter_errors:NAME``, ``transform_failed:NAME``."""
        await self._ready()
        broker = self.app.broker
        raw = await broker.retrying(broker.client.hgetall, self.store.keys.stats)
        return {text(k): int(v) for k, v in sorted(raw.items())}


def _describe(binding: Binding) -> str:
    """One line for the audit trail."""
    extra = f" if {binding.filter}" if binding.filter else ""
    return f"{binding.name}: {binding.topic} -> {binding.queue}{extra}"
