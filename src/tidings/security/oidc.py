"""OIDC / JWT bearer tokens, verified with PyJWT against a JWKS file or URL.

The token's signature (by a key of the JWKS, chosen by ``kid``), issuer, audience and
expiry are checked; its scopes come from the ``scope`` claim (space-separated, as OAuth
2 writes it) or a list claim (``scp``, ``permissions``; ``TIDINGS_SECURITY__OIDC_SCOPE_CLAIM``).
Only asymmetric algorithms are accepted, so a token signed with the public key as an HMAC
secret is refused.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jwt

from ..core.errors import ConfigError, InvalidTokenError
from ..core.security_settings import SecuritySettings
from .principals import Principal

ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA")


class JwtVerifier:
    """Verifies bearer JWTs of one issuer and audience against a JWKS (file or URL)."""

    def __init__(self, jwks: str | Path, *, issuer: str, audience: str,
                 scope_claim: str = "scope", leeway: float = 30.0) -> None:
        self.issuer, self.audience, self.scope_claim, self.leeway = (issuer, audience,
                                                                     scope_claim, leeway)
        source = str(jwks)
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        if source.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(source, cache_keys=True, lifespan=300)
        else:
            try:
                self._keys = jwt.PyJWKSet.from_dict(json.loads(Path(source).read_text()))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise ConfigError("TIDINGS_SECURITY__OIDC_JWKS",
                                  f"cannot load the JWKS {source}: {exc}") from None

    @classmethod
    def from_settings(cls, security: SecuritySettings) -> JwtVerifier | None:
        if security.oidc_jwks is None:
            return None
        if not security.oidc_issuer or not security.oidc_audience:
            raise ConfigError("TIDINGS_SECURITY__OIDC_ISSUER", "OIDC needs the issuer and the "
                              "audience as well as the JWKS")
        return cls(security.oidc_jwks, issuer=security.oidc_issuer,
                   audience=security.oidc_audience, scope_claim=security.oidc_scope_claim)

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._keys.keys:
            if kid is None or key.key_id == kid:
                return key.key
        raise InvalidTokenError(f"no key {kid!r} in the JWKS")

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; InvalidTokenError naming what failed."""
        try:
            claims = jwt.decode(token, self._key(token), algorithms=list(ALGORITHMS),
                                audience=self.audience, issuer=self.issuer, leeway=self.leeway,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except InvalidTokenError:
            raise
        except jwt.PyJWTError as exc:
            raise InvalidTokenError(f"JWT rejected: {exc}") from None
        raw = claims.get(self.scope_claim, "")
        scopes = raw.split() if isinstance(raw, str) else [str(s) for s in raw or []]
        principal = Principal.of(str(claims["sub"]), scopes, "oidc")
        return Principal(principal.name, principal.scopes, "oidc", claims)

    async def verify_async(self, token: str) -> Principal:
        """:meth:`verify` off the event loop (a JWKS URL is fetched with blocking I/O)."""
        return await asyncio.to_thread(self.verify, token)
