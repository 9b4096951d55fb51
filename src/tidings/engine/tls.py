"""TLS options of the server connection, from the settings, and URLs safe to print.

redis-py reads its TLS options from ``rediss://`` URL parameters (``ssl_ca_certs``,
``ssl_cert_reqs``, ...), undocumented there and easy to get wrong: ``ssl_cert_reqs=none``
silently accepts any certificate, and redis-py 5 checks no hostname by default. tidings
builds them from ``TIDINGS_SECURITY__TLS_*`` instead, with verification and hostname
checking on unless turned off, and a warning at every start when they are.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..core.errors import ConfigError
from ..core.security_settings import SecuritySettings

log = logging.getLogger("tidings.security")
_OFF = ("none", "optional", "false", "0")
TLS_SCHEMES = ("rediss://", "rediss+sentinel://", "valkeys+sentinel://")


def redacted(url: str) -> str:
    """``url`` without its password (and without query parameters, which may hold one)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        login, _, host = netloc.rpartition("@")
        user = login.partition(":")[0]
        netloc = f"{user}:***@{host}" if ":" in login else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _file(name: str, path: Path | None) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise ConfigError(f"TIDINGS_SECURITY__{name.upper()}", f"no such file: {path}")
    return str(path)


def tls_options(url: str, security: SecuritySettings) -> dict[str, Any]:
    """The connection options for ``url``: TLS ones for ``rediss://``, none otherwise.

    Raises ConfigError for a certificate setting with a URL that is not ``rediss://``
    (the setting would be ignored and the connection in the clear) or a missing file.
    """
    files = {name: getattr(security, name) for name in
             ("tls_ca_file", "tls_cert_file", "tls_key_file")}
    if not url.lower().startswith(TLS_SCHEMES):
        given = [name for name, path in files.items() if path is not None]
        if given:
            raise ConfigError(f"TIDINGS_SECURITY__{given[0].upper()}",
                              "is set but TIDINGS_REDIS_URL is not rediss:// (or "
                              "rediss+sentinel://): the connection "
                              "would not use TLS")
        return {}
    query = {k.lower(): v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    verify = security.tls_verify and query.get("ssl_cert_reqs", "required").lower() not in _OFF
    if (files["tls_cert_file"] is None) != (files["tls_key_file"] is None):
        raise ConfigError("TIDINGS_SECURITY__TLS_KEY_FILE", "a client certificate needs both "
                          "TLS_CERT_FILE and TLS_KEY_FILE")
    options: dict[str, Any] = {
        "ssl_cert_reqs": "required" if verify else "none",
        "ssl_check_hostname": verify and security.tls_check_hostname,
    }
    for name, option in (("tls_ca_file", "ssl_ca_certs"), ("tls_cert_file", "ssl_certfile"),
                         ("tls_key_file", "ssl_keyfile")):
        value = _file(name, files[name])
        if value is not None:
            options[option] = value
    if security.tls_key_password is not None:
        options["ssl_password"] = security.tls_key_password.get_secret_value()
    host = urlsplit(url).hostname
    if not verify:
        log.warning("TLS certificate verification is OFF for %s: any server can pose as it "
                    "(TIDINGS_SECURITY__TLS_VERIFY or ssl_cert_reqs in the URL)", host)
    elif not options["ssl_check_hostname"]:
        log.warning("TLS hostname checking is OFF for %s: any certificate of the CA is "
                    "accepted (TIDINGS_SECURITY__TLS_CHECK_HOSTNAME)", host)
    return options


def _without_tls_query(url: str) -> str:
    """``url`` without the ``ssl_*`` parameters tidings now sets (they would win)."""
    parts = urlsplit(url)
    kept = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("ssl_"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, kept, parts.fragment))


def connection_url(url: str, security: SecuritySettings) -> tuple[str, dict[str, Any]]:
    """The URL to hand redis-py and the options to go with it (see :func:`tls_options`).

    ``ssl_ca_certs`` and the other ``ssl_*`` URL parameters still work (a setting of the
    same thing wins), except that ``ssl_cert_reqs=none`` is warned about like the setting.
    """
    options = tls_options(url, security)
    if not options:
        return url, {}
    query = {k.lower(): v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    for param in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path"):
        if param in query:
            options.setdefault(param, query[param])
    return _without_tls_query(url), options


def http_ssl_context(security: SecuritySettings) -> ssl.SSLContext | None:
    """The server TLS context of tidings' HTTP servers (metrics/health, the API), or None
    (plain HTTP) when no certificate is set; one of certificate and key alone is an error."""
    cert, key = security.http_tls_cert_file, security.http_tls_key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("TIDINGS_SECURITY__HTTP_TLS_KEY_FILE", "TLS for the HTTP servers "
                          "needs both HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(_file("http_tls_cert_file", cert)),
                                str(_file("http_tls_key_file", key)))
    except ssl.SSLError as exc:
        raise ConfigError("TIDINGS_SECURITY__HTTP_TLS_CERT_FILE",
                          f"certificate and key do not load: {exc.reason or exc}") from None
    return context


def postgres_ssl(security: SecuritySettings) -> dict[str, str]:
    """libpq connection parameters for TLS to PostgreSQL (psycopg/asyncpg ``sslmode``,
    ``sslrootcert``); ``verify-full`` by default. A mode that does not verify is warned
    about, like Redis'."""
    params: dict[str, str] = {"sslmode": security.postgres_sslmode}
    root = _file("postgres_sslrootcert", security.postgres_sslrootcert)
    if root is not None:
        params["sslrootcert"] = root
    if security.postgres_sslmode not in ("verify-ca", "verify-full"):
        log.warning("PostgreSQL TLS is %s: the server's certificate is not verified "
                    "(TIDINGS_SECURITY__POSTGRES_SSLMODE)", security.postgres_sslmode)
    return params
