"""Management commands run as a principal, authorised and audited.

The principal is the API token in ``TIDINGS_TOKEN`` (or ``--token`` where a command has
it) or, without one, the local operator (``local:<os user>``, with every permission: it
holds the server credentials anyway, and the server's ACL is what limits it). Each
operation leaves an audit record when it is allowed or denied, and one when it is done
or failed (see :mod:`tidings.security.audit`): in the prefix's audit stream and, with a
database configured, in the ledger's hash-chained trail (:attr:`Tidings.audit`), so one
trail holds every administrative command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from ..app import Tidings
from ..queues.queue import Queue
from ..security.audit import Operation, local_principal
from ..security.principals import Principal
from .support import resolve_queue


async def principal_of(app: Tidings, token: str | None = None) -> Principal:
    """The principal of ``token`` (else ``TIDINGS_TOKEN``), or the local operator."""
    token = token or os.environ.get("TIDINGS_TOKEN")
    if not token:
        return local_principal()
    from ..security.auth import Authenticator  # PyJWT and cryptography: only for a token

    return await app.extension(Authenticator).authenticate(token)


@contextlib.asynccontextmanager
async def authorized(app: Tidings, permission: str, action: str, target: str,
                     token: str | None = None, **detail: Any) -> AsyncIterator[Operation]:
    """:meth:`Audit.operation` as the principal of ``token`` (else ``TIDINGS_TOKEN``, else
    the local operator)."""
    who = await principal_of(app, token)
    async with app.audit.operation(who, permission, action, target, **detail) as operation:
        yield operation


@contextlib.asynccontextmanager
async def on_queue(app: Tidings, name: str, permission: str, action: str,
                   **detail: Any) -> AsyncIterator[Queue]:
    """:func:`authorized` for ``<permission>:<queue>``, yielding the queue; the queue is
    resolved first, so an unknown queue is refused before anything is recorded."""
    queue = await resolve_queue(app, name)
    async with authorized(app, f"{permission}:{name}", action, name, **detail):
        yield queue
