"""One entry point for a bearer token: an API token (``tdg_...``) or an OIDC JWT.

The HTTP API (and the CLI given ``--token``) calls :meth:`Authenticator.authenticate`
with the ``Authorization: Bearer`` value and gets a Principal or InvalidTokenError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import InvalidTokenError
from ..queues.host import ExtensionHost
from .principals import Principal
from .tokens import PREFIX, TokenStore

if TYPE_CHECKING:
    from .oidc import JwtVerifier


class Authenticator:
    """The app's token store and, if configured, its OIDC verifier (``app.extension``)."""

    def __init__(self, app: ExtensionHost) -> None:
        self.tokens = TokenStore(app)
        self.oidc: JwtVerifier | None = None
        if app.settings.security.oidc_jwks is not None:
            from .oidc import JwtVerifier  # PyJWT only where OIDC is configured

            self.oidc = JwtVerifier.from_settings(app.settings.security)

    async def authenticate(self, bearer: str) -> Principal:
        token = bearer.removeprefix("Bearer ").strip()
        if token.startswith(PREFIX):
            return await self.tokens.authenticate(token)
        if self.oidc is None:
            raise InvalidTokenError("not a tidings API token, and OIDC is not configured "
                                    "(TIDINGS_SECURITY__OIDC_JWKS)")
        return await self.oidc.verify_async(token)
