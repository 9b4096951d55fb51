"""The rule set in Redis: versioned, audited, changed by compare-and-set, announced.

Keys (``<prefix>:{routes}:*``, see :class:`tidings.core.keys.RouteKeys`): the version,
the current rule set as JSON, a history hash of past versions (for ``rollback``) and an
audit stream (who changed what, when). ``routes_save.lua`` writes all of them at once,
only if the version is still the one the change was made from, and publishes the new
version on a channel, so every producer reloads without a restart.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ..core.errors import RouteError, RouteNotFoundError, RulesConflictError
from ..core.keys import RouteKeys
from ..core.routing_settings import RoutingSettings
from ..core.stored import text
from ..engine.broker import Broker
from ..engine.scripts import LIBRARY
from .rules import RuleSet

ROUTES_SAVE = LIBRARY["routes_save"]
CONFLICT_RETRIES = 10


def default_actor() -> str:
    """Who changes rules from this process, for the audit trail: ``user@host``."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a container without /etc/passwd entry
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One saved change: the version it made, who, what, when."""

    version: int
    actor: str
    action: str
    detail: str
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "actor": self.actor, "action": self.action,
                "detail": self.detail, "at": self.at.isoformat()}


def parse_rules(raw: bytes | str | None) -> RuleSet:
    """A stored rule set (None: no rules saved yet)."""
    if raw is None:
        return RuleSet()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RouteError("rules", f"the stored rule set is not JSON: {exc}") from None
    return RuleSet.from_dict(data)


class RuleStore:
    """Reads and changes one key prefix's rule set."""

    def __init__(self, broker: Broker, keys: RouteKeys, settings: RoutingSettings) -> None:
        self.broker, self.keys, self.settings = broker, keys, settings

    async def load(self) -> RuleSet:
        """The current rule set, read now."""
        raw = await self.broker.retrying(self.broker.client.get, self.keys.rules)
        return parse_rules(raw)

    async def version(self) -> int:
        raw = await self.broker.retrying(self.broker.client.get, self.keys.version)
        return 0 if raw is None else int(raw)

    async def change(self, edit: Callable[[RuleSet], RuleSet], *, action: str, detail: str,
                     actor: str | None = None) -> RuleSet:
        """Apply ``edit`` to the current rules and save the result as the next version.

        ``edit`` may raise (RouteError, RouteNotFoundError) to refuse the change. If
        another process saves first, the change is made again on its version (a few
        times, then :class:`RulesConflictError`).
        """
        for _ in range(CONFLICT_RETRIES):
            current = await self.load()
            edited = edit(current)
            new = RuleSet(current.version + 1, edited.bindings, edited.unrouted,
                          edited.unrouted_queue, edited.compiled)
            raw = orjson.dumps(new.to_dict())
            saved, _ = await self.broker.call(ROUTES_SAVE, [
                self.keys.version, self.keys.rules, self.keys.history, self.keys.audit], [
                current.version, raw, actor or default_actor(), action, detail,
                self.keys.channel, self.settings.history])
            if saved:
                return new
        raise RulesConflictError(f"the rules changed {CONFLICT_RETRIES} times while {action} "
                                 "was being saved; try again")

    async def at_version(self, version: int) -> RuleSet:
        """The rule set as it was at ``version`` (kept for the last ``history`` versions)."""
        if version == 0:
            return RuleSet()
        raw = await self.broker.retrying(self.broker.client.hget, self.keys.history, version)
        if raw is None:
            raise RouteNotFoundError(f"no stored rule set version {version} (the last "
                                     f"{self.settings.history} versions are kept)")
        return parse_rules(raw)

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        """The latest changes, newest first."""
        entries = await self.broker.retrying(self.broker.client.xrevrange, self.keys.audit,
                                             "+", "-", limit)
        out = []
        for _, fields in entries:
            f = {text(k): text(v) for k, v in fields.items()}
            out.append(AuditEntry(int(f.get("version", 0)), f.get("actor", ""),
                                  f.get("action", ""), f.get("detail", ""),
                                  datetime.fromtimestamp(int(f.get("at", 0)) / 1000, UTC)))
        return out
