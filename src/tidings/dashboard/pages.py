"""The dashboard's pages (GET): overview, a queue, dead letters, trace, schedules and
campaigns, breakers, workers; and the login form."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..core.errors import InvalidTokenError
from ..observability.workers import read_workers
from ..queues.dead_letters import make_filter
from ..scheduling.campaigns import Campaigns
from . import session, views
from .web import Dashboard, NotFound, _dashboard, root

if TYPE_CHECKING:
    from ..queues.queue import Queue
    from ..security.principals import Principal

DLQ_PAGE = 100


async def queue_named(dash: Dashboard, name: str) -> Queue:
    queue = await dash.app.find_queue(name)
    if queue is None:
        raise NotFound(f"no queue {name!r}")
    return queue


async def overview(dash: Dashboard, request: Request, principal: Principal) -> Response:
    rows = await views.overview(dash.app, dash.history)
    return dash.render(request, "overview.html", principal, rows=rows)


async def queues_fragment(dash: Dashboard, request: Request, principal: Principal) -> Response:
    """The overview's table alone, which the page polls (htmx) instead of reloading."""
    rows = await views.overview(dash.app, dash.history)
    return dash.render(request, "_queues.html", principal, rows=rows)


async def queue_page(dash: Dashboard, request: Request, principal: Principal) -> Response:
    queue = await queue_named(dash, request.path_params["name"])
    detail = await views.queue_detail(dash.app, queue)
    return dash.render(request, "queue.html", principal, queue=queue.name, **detail)


def _dlq_filter(request: Request) -> dict[str, str | None]:
    return {key: (request.query_params.get(key) or "").strip() or None
            for key in ("reason", "error_type")}


async def dlq_page(dash: Dashboard, request: Request, principal: Principal) -> Response:
    queue = await queue_named(dash, request.path_params["name"])
    principal.require(f"dlq:read:{queue.name}")
    chosen = _dlq_filter(request)
    entries = await queue.dlq.list(DLQ_PAGE, make_filter(reason=chosen["reason"],
                                                          error_type=chosen["error_type"]))
    return dash.render(request, "dlq.html", principal, queue=queue.name, entries=entries,
                       chosen=chosen, total=await queue.dlq.count(), limit=DLQ_PAGE)


async def dead_letter_page(dash: Dashboard, request: Request,
                           principal: Principal) -> Response:
    queue = await queue_named(dash, request.path_params["name"])
    principal.require(f"dlq:read:{queue.name}")
    message_id = request.path_params["message_id"]
    entry = await queue.dlq.get(message_id)
    if entry is None:
        raise NotFound(f"no dead letter {message_id!r} in {queue.name}")
    return dash.render(request, "dead_letter.html", principal, queue=queue.name, entry=entry)


async def trace_page(dash: Dashboard, request: Request, principal: Principal) -> Response:
    query = (request.query_params.get("q") or "").strip()
    by = "correlation" if request.query_params.get("by") == "correlation" else "id"
    result = await views.trace_search(dash.app, query, by) if query else None
    if result is not None:  # a payload is shown only to who may inspect its queue
        for name in {n for n, _ in result.located} | {t.queue for t in result.traces}:
            principal.require(f"queue:inspect:{name}")
    return dash.render(request, "trace.html", principal, query=query, by=by, result=result)


async def schedules_page(dash: Dashboard, request: Request, principal: Principal) -> Response:
    schedules = await dash.app.schedules.list()
    campaigns = await Campaigns.of(dash.app).list()
    return dash.render(request, "schedules.html", principal, schedules=schedules,
                       campaigns=campaigns)


async def breakers_page(dash: Dashboard, request: Request, principal: Principal) -> Response:
    states = await dash.app.flow.breaker_states()
    now = dash.app.clock.time()
    return dash.render(request, "breakers.html", principal, states=states, now=now)


async def workers_page(dash: Dashboard, request: Request, principal: Principal) -> Response:
    workers = await read_workers(dash.app, await dash.app.queue_names())
    return dash.render(request, "workers.html", principal, workers=workers)


def _next(request: Request, value: Any) -> str:
    """Where to go after logging in: a path of this dashboard only (no open redirect)."""
    base = root(request)
    if isinstance(value, str) and value.startswith(base + "/") and not value.startswith("//"):
        return value
    return base + "/"


async def login_form(request: Request) -> Response:
    dash = _dashboard(request)
    return dash.render(request, "login.html", None, next=_next(request,
                                                               request.query_params.get("next")))


async def login(request: Request) -> Response:
    dash = _dashboard(request)
    form = await request.form()
    target = _next(request, form.get("next"))
    if not session.csrf_ok(request, form.get("csrf")):
        return dash.render(request, "login.html", None, 403, next=target,
                           error="the form expired; try again")
    token = form.get("token")
    try:
        await session.log_in(request, dash.authenticator, token if isinstance(token, str)
                             else "")
    except InvalidTokenError as exc:
        return dash.render(request, "login.html", None, 401, next=target, error=exc.reason)
    return RedirectResponse(target, status_code=303)


async def logout(request: Request) -> Response:
    dash = _dashboard(request)
    form = await request.form()
    if session.csrf_ok(request, form.get("csrf")):
        session.log_out(request)
    return dash.redirect(request, "/login")


Wrap = Callable[[Callable[[Dashboard, Request, Any], Awaitable[Response]]],
                Callable[[Request], Awaitable[Response]]]


def routes(page: Wrap) -> list[Route]:
    return [
        Route("/", page(overview)),
        Route("/fragments/queues", page(queues_fragment)),
        Route("/queues/{name}", page(queue_page)),
        Route("/queues/{name}/dlq", page(dlq_page)),
        Route("/queues/{name}/dlq/{message_id}", page(dead_letter_page)),
        Route("/trace", page(trace_page)),
        Route("/schedules", page(schedules_page)),
        Route("/breakers", page(breakers_page)),
        Route("/workers", page(workers_page)),
    ]
