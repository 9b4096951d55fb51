"""Management operations run as a principal: authorised, then audited when done or failed.

The one implementation behind the CLI (:mod:`tidings.cli.authz`), the HTTP API and the web
dashboard. Each operation leaves an audit record when it is allowed or denied, and one when
it is done or failed (see :mod:`tidings.security.audit`): in the prefix's audit stream and,
with a database configured, in the ledger's hash-chained trail (:class:`LedgerTrailSink`),
so one trail holds every administrative operation, whatever front end ran it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .app import Tidings
from .security.audit import Audit, AuditRecord
from .security.principals import Principal


class LedgerTrailSink:
    """The ledger's audit trail as a sink of the security audit: the outcome of each
    operation (done, failed or denied; "allowed" always has one of them after it)."""

    OUTCOMES = frozenset({"done", "failed", "denied"})

    def __init__(self, app: Tidings) -> None:
        self.app = app

    async def record(self, record: AuditRecord) -> None:
        if record.outcome not in self.OUTCOMES:
            return
        await self.app.ledger.audit.record(
            record.action, record.target or None,
            {"outcome": record.outcome, "permission": record.permission, **record.detail},
            actor=record.principal)


def audit_of(app: Tidings) -> Audit:
    """The app's audit, writing to the ledger's trail too when a database is configured."""
    audit = app.extension(Audit)
    if app.ledger.configured and not any(isinstance(s, LedgerTrailSink) for s in audit.sinks):
        audit.add_sink(LedgerTrailSink(app))
    return audit


@dataclass
class Operation:
    """The operation being run: who runs it, and what its "done" record will hold."""

    principal: Principal
    detail: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def audited(app: Tidings, principal: Principal, permission: str, action: str,
                  target: str, **detail: Any) -> AsyncIterator[Operation]:
    """Check ``permission`` (NotAuthorizedError if missing) and audit the operation run
    inside: allowed or denied first, then done or failed (with the error's type). The
    body may add to ``operation.detail`` (a new token's id, a count)."""
    operation = Operation(principal, dict(detail))
    audit = audit_of(app)
    await audit.authorize(principal, permission, action, target)
    try:
        yield operation
    except BaseException as exc:
        await audit.record(principal, action, target, permission, "failed",
                           error=type(exc).__name__, **operation.detail)
        raise
    await audit.record(principal, action, target, permission, "done", **operation.detail)
