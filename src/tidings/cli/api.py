"""``tidings api``: serve the HTTP API (:mod:`tidings.api`) with uvicorn.

FastAPI and uvicorn are imported only when the command runs (``tidings[api]``), so
``tidings --help`` does not load them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .support import EXIT_USAGE, AppOption, Cli, CommandFailed, load_app

api_cli = Cli(help="The HTTP API.", no_args_is_help=False)


@api_cli.command("api")
def api(
    host: Annotated[str | None, typer.Option(
        help="Listen on this address (default: TIDINGS_API__HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="Listen on this port (default: TIDINGS_API__PORT, 8000).")
    ] = None,
    app_spec: AppOption = None,
    access_log: Annotated[bool, typer.Option(
        "--access-log", help="Log every request (off: the publish path stays fast).")
    ] = False,
    dashboard: Annotated[bool, typer.Option(
        "--dashboard/--no-dashboard", help="Serve the web dashboard at /ui too.")] = True,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /openapi.json) and the web dashboard (/ui)
    until SIGTERM or SIGINT."""
    try:
        import uvicorn

        from ..api import create_api
        from ..dashboard import create_dashboard
    except ImportError as exc:
        raise CommandFailed(f"the HTTP API needs tidings[api] ({exc.name} is missing): "
                            "pip install 'tidings[api]'", EXIT_USAGE) from None
    app = load_app(app_spec)
    settings = app.settings.api
    security = app.settings.security
    tls = {}
    if security.http_tls_cert_file and security.http_tls_key_file:
        tls = {"ssl_certfile": str(security.http_tls_cert_file),
               "ssl_keyfile": str(security.http_tls_key_file)}
    ui = create_dashboard(app) if dashboard else None
    uvicorn.run(create_api(app, ui=ui), host=host or settings.host,
                port=settings.port if port is None else port, access_log=access_log,
                log_level="info", lifespan="on", **tls)  # type: ignore[arg-type]
