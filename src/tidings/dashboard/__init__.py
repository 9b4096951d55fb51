"""The web dashboard: every queue at a glance, and the operations on them, in a browser.

Server-rendered (Jinja2) with htmx for the live parts, everything served locally::

    from tidings.dashboard import create_dashboard
    web = create_dashboard(app)          # an ASGI app; uvicorn serves it
    # uvicorn.run(web, port=8081)  ->  http://127.0.0.1:8081/

Needs the ``api`` extra (Starlette, uvicorn). ``tidings.api.create_api`` mounts it at
``/ui``. Logging in takes an API token (``tidings tokens create``) or an OIDC token; every
action is authorised against the token's scopes and audited.
"""

from .app import create_dashboard

__all__ = ["create_dashboard"]
