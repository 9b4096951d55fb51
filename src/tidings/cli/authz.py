"""Management commands run as a principal, authorised and audited.

The principal is the API token in ``TIDINGS_TOKEN`` (or ``--token`` where a command has
it) or, without one, the local operator (``local:<os user>``, with every permission: it
holds the server credentials anyway, and the server's ACL is what limits it). Each
operation leaves an audit record when it is allowed or denied, and one when it is done
or failed (see :mod:`tidings.security.audit`): in the prefix's audit stream and, with a
database configured, in the ledger's hash-chained trail (:class:`LedgerTrailSink`), so one
trail holds every administrative command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..app import Tidings
from ..queues.queue import Queue
from ..security.audit import Audit, AuditRecord, local_principal
from ..security.principals import Principal
from .support import resolve_queue


async def principal_of(app: Tidings, token: str | None = None) -> Principal:
    """The principal of ``token`` (else ``TIDINGS_TOKEN``), or the local operator."""
    token = token or os.environ.get("TIDINGS_TOKEN")
    if not token:
        return local_principal()
    from ..security.auth import Authenticator  # PyJWT and cryptography: only for a token

    return await app.extension(Authenticator).authenticate(token)


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
async def authorized(app: Tidings, permission: str, action: str, target: str,
                     token: str | None = None, **detail: Any) -> AsyncIterator[Operation]:
    """Check ``permission`` (NotAuthorizedError if missing) and audit the operation run
    inside: allowed or denied first, then done or failed (with the error's type). The
    body may add to ``operation.detail`` (a new token's id, a count)."""
    operation = Operation(await principal_of(app, token), dict(detail))
    who, audit = operation.principal, audit_of(app)
    await audit.authorize(who, permission, action, target)
    try:
        yield operation
    except BaseException as exc:
        await audit.record(who, action, target, permission, "failed",
                           error=type(exc).__name__, **operation.detail)
        raise
    await audit.record(who, action, target, permission, "done", **operation.detail)


@contextlib.asynccontextmanager
async def on_queue(app: Tidings, name: str, permission: str, action: str,
                   **detail: Any) -> AsyncIterator[Queue]:
    """:func:`authorized` for ``<permission>:<queue>``, yielding the queue; the queue is
    resolved first, so an unknown queue is refused before anything is recorded."""
    queue = await resolve_queue(app, name)
    async with authorized(app, f"{permission}:{name}", action, name, **detail):
        yield queue
