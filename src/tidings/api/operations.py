"""Circuit breakers, workers, health, and who the caller is."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..core.errors import ValidationError
from ..flow.breaker import breaker_view
from ..observability.health import Health
from ..observability.workers import read_workers
from .common import JSON, Caller, doc
from .models import PrincipalOut

router = APIRouter(tags=["operations"])


@router.get("/breakers", **doc())
async def breakers(access: Caller) -> list[dict[str, Any]]:
    """Circuit breakers shared by the workers: state, failures in the window, queues."""
    access.require("breakers:read")
    states = await access.app.flow.breaker_states()
    return [breaker_view(name, s, config) for name, (s, config) in states.items()]


@router.post("/breakers/{name}/reset", **doc())
async def reset_breaker(name: str, access: Caller) -> dict[str, Any]:
    """Force a breaker closed."""
    states = await access.app.flow.breaker_states()
    if name not in states:
        raise ValidationError("name", f"no breaker {name!r}; known: "
                              f"{', '.join(sorted(states)) or 'none'}")
    async with access.change(f"breakers:reset:{name}", "breaker.reset", name):
        await access.app.flow.breaker(name).reset()
    state, config = (await access.app.flow.breaker_states())[name]
    return breaker_view(name, state, config)


@router.get("/workers", **doc())
async def workers(access: Caller) -> list[dict[str, Any]]:
    """Every worker consuming a queue the server knows: alive (heartbeat within the
    visibility timeout), its queues, messages in flight, last heartbeat."""
    access.require("workers:read")
    return [w.as_dict() for w in await read_workers(access.app)]


@router.get("/health", response_class=JSON, responses={503: {"description": "not ready"}})
async def health(request: Request) -> Response:
    """Readiness, without a token (for load balancers): Redis answers and the scripts
    are loaded. 200 when ready, 503 otherwise; the body names every check."""
    app = request.app.state.tidings
    if not app.broker.connected:
        try:
            await app.connect()
        except Exception:
            pass  # reported by the check below
    report = await Health(app, None).readiness()
    return JSON(report, 200 if report["status"] == "ok" else 503)


@router.get("/me", **doc(PrincipalOut))
async def me(access: Caller) -> dict[str, Any]:
    """The caller: its name, how it authenticated, its scopes (a UI hides what they
    would refuse)."""
    p = access.principal
    return {"name": p.name, "kind": p.kind, "scopes": sorted(p.scopes)}
