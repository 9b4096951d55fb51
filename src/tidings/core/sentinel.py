"""Redis Sentinel addresses in ``TIDINGS_REDIS_URL``: ``redis+sentinel://``.

One setting keeps one way in: the CLI's ``--url``, ``Tidings(redis_url=...)``, the settings
file and the environment all take the same URL::

    redis+sentinel://[[user]:password@]host1[:26379][,host2[:26379]...]/mymaster[/db]
        [?sentinel_username=...&sentinel_password=...]

The user and password in front authenticate to the data servers (the primary), like in a
``redis://`` URL; ``sentinel_username`` / ``sentinel_password`` to the sentinels, which have
their own ``requirepass``. The port of a sentinel defaults to 26379. ``valkey+sentinel://``
is the same; ``rediss+sentinel://`` (or ``valkeys+sentinel://``) speaks TLS to the
sentinels and the data servers, with the ``TIDINGS_SECURITY__TLS_*`` settings.
Discovery itself is redis-py's (``redis.asyncio.sentinel``); this module only reads the
URL. Errors never repeat the URL: it may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

SENTINEL_SCHEMES = ("redis+sentinel", "valkey+sentinel", "rediss+sentinel", "valkeys+sentinel")
TLS_SENTINEL_SCHEMES = ("rediss+sentinel", "valkeys+sentinel")  # TLS to sentinels and data
SENTINEL_PORT = 26379
_QUERY_KEYS = ("sentinel_username", "sentinel_password")
FORM = "redis+sentinel://[user:password@]host:26379,host:26379/master-name/db"


@dataclass(frozen=True)
class SentinelTarget:
    """Where the sentinels are, which primary to ask them for, and the credentials."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False  # rediss+sentinel://: TLS to the sentinels and the data servers

    def __repr__(self) -> str:  # never the passwords
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"SentinelTarget({hosts}/{self.service}/{self.db})"


def is_sentinel_url(url: str) -> bool:
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a ``redis+sentinel://`` URL; ValueError says what is wrong (without the URL)."""
    _, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise ValueError(f"a sentinel URL has no #fragment; the form is {FORM}")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    username, password = _credentials(userinfo)
    sentinels = tuple(_address(part) for part in hosts.split(","))
    service, db = _path(path)
    extra = _query(query)
    return SentinelTarget(sentinels, service, db, username, password,
                          extra.get("sentinel_username"), extra.get("sentinel_password"),
                          url.partition("://")[0].lower() in TLS_SENTINEL_SCHEMES)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, (unquote(password) or None) if colon else None


def _address(part: str) -> tuple[str, int]:
    part = part.strip()
    if not part:
        raise ValueError(f"a sentinel address is empty; the form is {FORM}")
    if part.startswith("["):  # [::1]:26379
        host, bracket, tail = part[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"sentinel address {part!r}: an IPv6 address is [addr]:port")
        port_text = tail[1:]
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ValueError(f"sentinel address {part!r} has no host")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel address {part!r}: port {port_text!r} is not 1-65535")
    return host, int(port_text)


def _path(path: str) -> tuple[str, int]:
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if not parts:
        raise ValueError(f"the master name is missing (the path); the form is {FORM}")
    if len(parts) > 2:
        raise ValueError(f"the path is /master-name or /master-name/db; the form is {FORM}")
    service = parts[0]
    if not service or any(c.isspace() for c in service):
        raise ValueError(f"master name {service!r} is empty or holds spaces")
    if len(parts) == 1 or parts[1] == "":
        return service, 0
    if not parts[1].isdigit():
        raise ValueError(f"database {parts[1]!r} is not a database number")
    return service, int(parts[1])


def _query(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError("the query string is malformed") from None
    found: dict[str, str] = {}
    for key, value in pairs:
        if key not in _QUERY_KEYS:
            raise ValueError(f"unknown option {key!r}; the options are {', '.join(_QUERY_KEYS)}")
        found[key] = value
    return found
