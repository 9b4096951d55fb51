"""Security settings (``TIDINGS_SECURITY__*``): TLS, message encryption, API tokens.

One nested model in the one settings object (``Settings.security``), e.g.
``TIDINGS_SECURITY__TLS_CA_FILE=/etc/tidings/ca.pem``. Verification is on by default;
turning it off is possible (a test server with a self-signed certificate) and logged as a
warning at every start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

PgSslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class SecuritySettings(BaseModel):
    """TLS to Redis, PostgreSQL and tidings' HTTP servers; encryption keys; tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Redis (rediss:// URLs). The CA bundle that signs the server's certificate (default:
    # the system's), and a client certificate and key for servers that require one.
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_key_password: SecretStr | None = None
    tls_check_hostname: bool = True
    tls_verify: bool = Field(True, description="off: any certificate is accepted (warned)")
    # PostgreSQL (the ledger): libpq's sslmode and root certificate.
    postgres_sslmode: PgSslMode = "verify-full"
    postgres_sslrootcert: Path | None = None
    # The HTTP servers tidings runs (metrics/health, the API): TLS when both are set.
    http_tls_cert_file: Path | None = None
    http_tls_key_file: Path | None = None
    # Message encryption: a keyring file (JSON {"active": id, "keys": {id: base64}}) or
    # the keys inline ("id:base64,id:base64", the first one encrypts).
    keyring_file: Path | None = None
    keys: SecretStr | None = None
    # OIDC bearer tokens (the HTTP API): a JWKS file or URL, the issuer and audience
    # expected, and the claim that holds the scopes.
    oidc_jwks: str | None = None
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_scope_claim: str = "scope"
