"""HTTP API settings (``TIDINGS_API__*``): where ``tidings api`` listens, and who may call.

One nested model in the one settings object (``Settings.api``), e.g.
``TIDINGS_API__PORT=8080``. Secure by default: every call needs a bearer token (an API
token or an OIDC JWT) unless ``allow_anonymous`` is set, and then an anonymous caller gets
only the scopes in ``anonymous_scopes`` (none unless given), never ``admin`` implicitly.
CORS is off unless origins are listed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    """The HTTP API (:mod:`tidings.api`): listening address, limits, anonymous access, CORS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # Off: a call without a token is refused (401). On: it runs as the principal
    # "anonymous" holding anonymous_scopes (e.g. ["queue:inspect:*"] for a read-only view).
    allow_anonymous: bool = False
    anonymous_scopes: tuple[str, ...] = ()
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024,
                                description="larger request bodies are refused (413)")
    max_batch: int = Field(1000, ge=1, le=10_000, description="messages per batch publish")
    # Authenticated tokens are remembered this long (seconds; 0: checked on every call),
    # so a revoked token may still work for this long.
    auth_cache_seconds: float = Field(5.0, ge=0, le=300)
    cors_origins: tuple[str, ...] = ()
    # Default rate of a DLQ replay over HTTP (messages per second), when the call gives none.
    replay_rate: float = Field(1000.0, gt=0)
