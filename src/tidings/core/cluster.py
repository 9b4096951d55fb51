"""Redis Cluster seed nodes in ``TIDINGS_REDIS_URL``: ``redis+cluster://``.

::

    redis+cluster://[[user]:password@]host1[:6379][,host2[:6379]...][/]

Any reachable node is enough: the client reads the whole slot map from it (``CLUSTER
SLOTS``); more seeds only help when some are down at start. ``valkey+cluster://`` is the
same, ``rediss+cluster://`` (``valkeys+cluster://``) uses TLS with the
``TIDINGS_SECURITY__TLS_*`` settings. A cluster has one database, so the path is empty (or
``/0``). Errors never repeat the URL: it may hold a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

CLUSTER_SCHEMES = ("redis+cluster", "valkey+cluster", "rediss+cluster", "valkeys+cluster")
CLUSTER_PORT = 6379
FORM = "redis+cluster://[user:password@]host:6379,host:6379/"


@dataclass(frozen=True)
class ClusterTarget:
    """The seed nodes, whether to use TLS, and the credentials of the data servers."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never the password
        hosts = ",".join(f"{host}:{port}" for host, port in self.nodes)
        return f"ClusterTarget({hosts}{', tls' if self.tls else ''})"


def is_cluster_url(url: str) -> bool:
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterTarget:
    """Read a ``redis+cluster://`` URL; ValueError says what is wrong (without the URL)."""
    scheme, _, rest = url.partition("://")
    if "?" in rest or "#" in rest:
        raise ValueError(f"a cluster URL takes no ?options or #fragment; the form is {FORM}")
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"a cluster has only database 0; the form is {FORM}")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = (unquote(secret) or None) if colon else None
    nodes = tuple(_address(part) for part in hosts.split(","))
    return ClusterTarget(nodes, scheme.lower().startswith(("rediss", "valkeys")),
                         username, password)


def _address(part: str) -> tuple[str, int]:
    part = part.strip()
    if not part:
        raise ValueError(f"a cluster node address is empty; the form is {FORM}")
    if part.startswith("["):  # [::1]:6379
        host, bracket, tail = part[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"cluster node {part!r}: an IPv6 address is [addr]:port")
        port_text = tail[1:]
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ValueError(f"cluster node {part!r} has no host")
    if not port_text:
        return host, CLUSTER_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"cluster node {part!r}: port {port_text!r} is not 1-65535")
    return host, int(port_text)
