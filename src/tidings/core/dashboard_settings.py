"""Web dashboard settings (``TIDINGS_DASHBOARD__*``): the session cookie and refresh.

One nested model in the one settings object (``Settings.dashboard``), e.g.
``TIDINGS_DASHBOARD__SESSION_SECRET=...``. Without a secret the dashboard makes a random
one at start: sessions then end when the process restarts, and several processes behind
one load balancer do not share them, so production sets one.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class DashboardSettings(BaseModel):
    """The dashboard's signed session cookie and its live refresh."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Signs the session cookie (itsdangerous, through Starlette's SessionMiddleware).
    session_secret: SecretStr | None = None
    session_max_age: int = Field(8 * 3600, ge=60, le=30 * 86400,
                                 description="seconds a login lasts")
    # Only over HTTPS when on (the dashboard behind TLS); off for plain http://localhost.
    secure_cookie: bool = False
    refresh_seconds: float = Field(2.0, ge=0.5, le=300,
                                   description="how often the live parts refresh")
    history: int = Field(60, ge=2, le=1000,
                         description="samples kept per queue for the sparklines")
