"""The HTTP API of tidings (``tidings[api]``): publish from any language, operate queues.

``create_api(app)`` returns a FastAPI app serving ``/v1`` (OpenAPI at ``/openapi.json``);
``tidings api`` serves it with uvicorn. Every call but ``/v1/health`` authenticates a
bearer token (:class:`tidings.security.auth.Authenticator`: API tokens, OIDC JWTs) and
checks the principal's permission; every change is audited
(:meth:`tidings.security.audit.Audit.operation`). Errors: :mod:`tidings.api.errors`.
"""

from __future__ import annotations

from .app import create_api

__all__ = ["create_api"]
