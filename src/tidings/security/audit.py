"""Authorising management operations, and the audit record each one leaves.

``await app.extension(Audit).authorize(principal, permission, action, target)`` checks
the permission and records the attempt, allowed or denied, to every sink. The default
sink appends to the Redis stream ``<prefix>:security:audit`` (capped); the ledger's audit
trail plugs in as another sink (:meth:`Audit.add_sink`) with the same record shape, and
may replace the stream (``Audit.sinks``). A record never holds a token or a key.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson

from ..queues.host import ExtensionHost
from .principals import Principal

log = logging.getLogger("tidings.security")
STREAM_MAXLEN = 100_000


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One management operation attempted: who, what, on what, and how it went."""

    at: float
    principal: str
    kind: str  # how the principal authenticated: token | oidc | local
    action: str  # tokens.create, keys.rotate, dlq.purge ...
    target: str
    permission: str
    outcome: str  # allowed | denied | done | failed
    detail: dict[str, Any] = field(default_factory=dict)


class AuditSink(Protocol):
    async def record(self, record: AuditRecord) -> None: ...


class StreamSink:
    """Appends each record, as JSON, to the prefix's audit stream."""

    def __init__(self, app: ExtensionHost) -> None:
        self.app = app

    async def record(self, record: AuditRecord) -> None:
        await self.app.connect()
        try:
            encoded = orjson.dumps(asdict(record))
        except TypeError:  # an integer past 64 bits in the detail (bad input, recorded too)
            encoded = json.dumps(asdict(record), default=str).encode()
        await self.app.broker.client.xadd(
            self.app.key_space.audit, {"record": encoded},
            maxlen=STREAM_MAXLEN, approximate=True)


def local_principal() -> Principal:
    """The operator at a terminal: the CLI run with the server credentials themselves."""
    import getpass  # pwd and termios: only when a command runs

    return Principal.of(f"local:{getpass.getuser()}", ["admin"], "local")


@dataclass
class Operation:
    """The operation being run: who runs it, and what its "done" record will hold."""

    principal: Principal
    detail: dict[str, Any] = field(default_factory=dict)


class Audit:
    """The app's authorisation check and audit sinks (``app.extension(Audit)``)."""

    def __init__(self, app: ExtensionHost) -> None:
        self.app = app
        self.sinks: list[AuditSink] = [StreamSink(app)]

    def add_sink(self, sink: AuditSink) -> None:
        self.sinks.append(sink)

    async def record(self, principal: Principal, action: str, target: str, permission: str,
                     outcome: str, **detail: Any) -> None:
        """Write one record to every sink; a sink that fails is logged, not fatal."""
        entry = AuditRecord(self.app.clock.time(), principal.name, principal.kind, action,
                            target, permission, outcome, detail)
        for sink in self.sinks:
            try:
                await sink.record(entry)
            except Exception:
                log.exception("audit sink %r failed on %s", sink, action)

    async def authorize(self, principal: Principal, permission: str, action: str,
                        target: str = "") -> None:
        """Record the attempt; raise NotAuthorizedError (after recording) if not allowed."""
        allowed = principal.allows(permission)
        await self.record(principal, action, target, permission,
                          "allowed" if allowed else "denied")
        principal.require(permission)

    @contextlib.asynccontextmanager
    async def operation(self, principal: Principal, permission: str, action: str,
                        target: str, **detail: Any) -> AsyncIterator[Operation]:
        """Check ``permission`` (NotAuthorizedError if missing) and audit the operation run
        inside: allowed or denied first, then done or failed (with the error's type). The
        body may add to ``operation.detail`` (a new token's id, a count). The CLI and the
        HTTP API run every change through it."""
        operation = Operation(principal, dict(detail))
        await self.authorize(principal, permission, action, target)
        try:
            yield operation
        except BaseException as exc:
            await self.record(principal, action, target, permission, "failed",
                              error=type(exc).__name__, **operation.detail)
            raise
        await self.record(principal, action, target, permission, "done", **operation.detail)

    async def entries(self, count: int = 100) -> list[AuditRecord]:
        """The newest ``count`` records of the audit stream, oldest first."""
        await self.app.connect()
        rows = await self.app.broker.client.xrevrange(self.app.key_space.audit, count=count)
        return [AuditRecord(**orjson.loads(fields[b"record"])) for _, fields in reversed(rows)]
