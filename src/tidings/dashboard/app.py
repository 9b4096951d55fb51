"""The dashboard's ASGI app: its routes, static files and session cookie."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import actions, pages
from .web import Dashboard, action, page

if TYPE_CHECKING:
    from ..app import Tidings
    from ..core.dashboard_settings import DashboardSettings
    from ..security.auth import Authenticator

STATIC = Path(__file__).parent / "static"


def create_dashboard(app: Tidings, *, authenticator: Authenticator | None = None,
                     settings: DashboardSettings | None = None,
                     debug: bool = False) -> Starlette:
    """The web dashboard of ``app`` as an ASGI app, rooted at wherever it is mounted.

    ``authenticator`` checks the login tokens (default: the app's, API tokens and OIDC
    when configured); ``settings`` default to ``app.settings.dashboard``
    (``TIDINGS_DASHBOARD__*``). Serve it with uvicorn, or mount it into another app.
    """
    from ..security.auth import Authenticator

    settings = settings or app.settings.dashboard
    dash = Dashboard(app, authenticator or app.extension(Authenticator), settings)
    secret = (settings.session_secret.get_secret_value() if settings.session_secret
              else secrets.token_urlsafe(32))  # sessions then last as long as the process
    routes = [
        *pages.routes(page), *actions.routes(action),
        Route("/login", pages.login_form, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(SessionMiddleware, secret_key=secret,  # type: ignore[arg-type]
                             session_cookie="tidings_dashboard",
                             max_age=settings.session_max_age, same_site="strict",
                             https_only=settings.secure_cookie)]
    web = Starlette(debug=debug, routes=routes, middleware=middleware)
    web.state.dashboard = dash
    return web
