"""What every handler shares: the dashboard's state, rendering, the login and CSRF
checks around pages and actions, and the error pages.

Rooted at its mount point: every link is built from the request's ``root_path``, so it
works standalone (``/``) and mounted (``/ui``, by ``tidings.api.create_api``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..core.errors import (
    CampaignNotFoundError,
    NotAuthorizedError,
    ScheduleNotFoundError,
    UnknownQueueError,
    ValidationError,
)
from ..security.principals import Principal
from . import session
from .history import History
from .views import age_text

if TYPE_CHECKING:
    from ..app import Tidings
    from ..core.dashboard_settings import DashboardSettings
    from ..security.auth import Authenticator

Page = Callable[["Dashboard", Request, Principal], Awaitable[Response]]
Action = Callable[["Dashboard", Request, Principal, dict[str, Any]], Awaitable[Response]]


class NotFound(Exception):
    """Something a page names does not exist (a queue, a dead letter, a schedule)."""


Refused = (ValidationError, NotAuthorizedError, NotFound, ScheduleNotFoundError,
           CampaignNotFoundError)


def root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


class Dashboard:
    """What every handler needs: the app, the authenticator, settings, templates, history."""

    def __init__(self, app: Tidings, authenticator: Authenticator,
                 settings: DashboardSettings) -> None:
        self.app = app
        self.authenticator = authenticator
        self.settings = settings
        self.history = History(settings.history, settings.refresh_seconds)
        self.env = Environment(loader=PackageLoader("tidings.dashboard", "templates"),
                               autoescape=select_autoescape(["html"]), enable_async=False)
        self.env.filters["age"] = age_text
        self.env.filters["when"] = lambda d: "-" if d is None else d.strftime(
            "%Y-%m-%d %H:%M:%S")

    def render(self, request: Request, name: str, principal: Principal | None,
               status: int = 200, **context: Any) -> HTMLResponse:
        template = self.env.get_template(name)
        allows = principal.allows if principal is not None else (lambda _: False)
        html = template.render(
            root=root(request), principal=principal, can=allows,
            csrf=session.csrf_token(request), flash=session.take_flash(request),
            refresh=self.settings.refresh_seconds, path=request.url.path, **context)
        return HTMLResponse(html, status)

    def redirect(self, request: Request, to: str) -> RedirectResponse:
        return RedirectResponse(root(request) + to, status_code=303)

    def failed(self, request: Request, principal: Principal | None,
               exc: Exception) -> HTMLResponse:
        """The page for a refusal or bad input: one line, never a traceback."""
        if isinstance(exc, NotAuthorizedError):
            status, title = 403, f"Not allowed: this needs the permission {exc.permission}"
        elif isinstance(exc, UnknownQueueError):
            status, title = 404, exc.reason
        elif isinstance(exc, NotFound | ScheduleNotFoundError | CampaignNotFoundError):
            status, title = 404, str(exc)
        elif isinstance(exc, ValidationError):
            status, title = 400, f"{exc.field}: {exc.reason}"
        else:
            raise exc
        return self.render(request, "error.html", principal, status, title=title)


def _dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
    """A GET handler for a logged-in principal; others are sent to the login page."""

    async def endpoint(request: Request) -> Response:
        dash = _dashboard(request)
        principal = await session.principal_of(request, dash.app)
        if principal is None:
            target = root(request) + "/login?next=" + quote(request.url.path, safe="/")
            if request.headers.get("HX-Request"):  # a fragment: send the whole page
                return Response(status_code=204, headers={"HX-Redirect": target})
            return RedirectResponse(target, status_code=303)
        try:
            return await handler(dash, request, principal)
        except Refused as exc:
            return dash.failed(request, principal, exc)

    return endpoint


def action(handler: Action) -> Callable[[Request], Awaitable[Response]]:
    """A POST handler: logged in, with the session's CSRF token, else refused (403)."""

    async def endpoint(request: Request) -> Response:
        dash = _dashboard(request)
        principal = await session.principal_of(request, dash.app)
        form = await request.form()
        if not session.csrf_ok(request, form.get("csrf")):
            return dash.render(request, "error.html", principal, 403,
                               title="Refused: the form's CSRF token is missing or stale; "
                                     "reload the page and try again")
        if principal is None:
            return dash.redirect(request, "/login")
        fields: dict[str, Any] = {key: form.getlist(key) if key == "ids" else form.get(key)
                                  for key in form}
        try:
            return await handler(dash, request, principal, fields)
        except Refused as exc:
            return dash.failed(request, principal, exc)

    return endpoint
