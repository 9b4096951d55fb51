"""TLS through Sentinel: ``rediss+sentinel://`` speaks TLS to the sentinels and the data
servers, with the ``TIDINGS_SECURITY__TLS_*`` settings and verification on.

Every server and sentinel of the deployment (sentinels.py) listens on TLS only
(``port 0``, ``tls-port``, ``tls-replication yes``), with a certificate of a CA made in
the test (certs.py); the sentinels announce 127.0.0.1, which the certificate names.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from certs import Authority
from conftest import new_prefix
from sentinels import Tls, start_deployment
from tidings import Message, Tidings
from tidings.core.errors import ConfigError, UntrustedCertificateError
from tidings.core.security_settings import SecuritySettings
from tidings.core.sentinel import parse_sentinel_url
from tidings.engine.switchover import switchover
from tidings.engine.tls import connection_url

# Starts its own servers: the CI pass against another Redis would repeat it as is.
pytestmark = pytest.mark.own_servers

needs_server = pytest.mark.skipif(shutil.which("redis-server") is None,
                                  reason="needs redis-server (built with TLS) on PATH")


def test_rediss_sentinel_url_means_tls_and_takes_the_tls_settings(tmp_path: Path) -> None:
    assert parse_sentinel_url("rediss+sentinel://h1,h2/m").tls
    assert parse_sentinel_url("valkeys+sentinel://h1/m").tls
    assert not parse_sentinel_url("redis+sentinel://h1/m").tls
    ca = Authority(tmp_path).pair.cert
    security = SecuritySettings(tls_ca_file=ca)
    _, tls = connection_url("rediss+sentinel://h1/m", security)
    assert tls["ssl_ca_certs"] == str(ca) and tls["ssl_cert_reqs"] == "required"
    with pytest.raises(ConfigError) as refused:  # a CA with a plain URL: not silently clear
        connection_url("redis+sentinel://h1/m", security)
    assert refused.value.field == "TIDINGS_SECURITY__TLS_CA_FILE"


@needs_server
async def test_rediss_sentinel_publishes_consumes_and_switches_over_on_tls(
        tmp_path: Path) -> None:
    ca = Authority(tmp_path / "certs")
    server = ca.issue("server")
    workdir = tmp_path / "sentinel"
    workdir.mkdir()
    deployment = start_deployment(workdir, replicas=1,
                                  tls=Tls(server.cert, server.key, ca.pair.cert))
    url = deployment.url
    assert url.startswith("rediss+sentinel://")
    app = Tidings(url, key_prefix=new_prefix(), security={"tls_ca_file": ca.pair.cert})
    untrusted = Tidings(url, key_prefix=new_prefix(), connect_retries=0)
    q = app.queue("ha", durability="replicated")
    got: list[object] = []
    all_in = asyncio.Event()

    @q.handler
    async def handle(msg: Message) -> None:
        got.append(msg.payload)
        if len(got) == 3:
            all_in.set()

    try:
        await app.connect()
        assert app.broker.channel._connection is not None
        for i in range(3):
            await q.publish({"i": i})
        async with app.worker(), asyncio.timeout(20):
            await all_in.wait()
        _, tls = connection_url(url, app.settings.security)
        moved = await switchover(url, tls=tls)
        assert moved.new[1] == deployment.primary_port() != moved.old[1]
        await q.publish({"i": "after"})
        assert (await q.stats()).depth == 1
        with pytest.raises(UntrustedCertificateError) as refused:  # not retried as an outage
            await untrusted.connect()  # the system CAs do not know ours
        assert refused.value.server.startswith("sentinel 127.0.0.1:")
    finally:
        await app.close()
        await untrusted.close()
        deployment.stop()


@needs_server
async def test_a_data_server_certificate_the_client_does_not_trust_is_a_typed_error(
        tmp_path: Path) -> None:
    """The sentinels' certificate is trusted, the primary's (another CA's) is not: the
    connection to the primary is refused as UntrustedCertificateError, not retried."""
    trusted, other = Authority(tmp_path / "a", "sentinels CA"), Authority(tmp_path / "b")
    server, sentinel = other.issue("server"), trusted.issue("sentinel")
    both = tmp_path / "both-cas.pem"  # the sentinels check the data servers too
    both.write_bytes(trusted.pair.cert.read_bytes() + other.pair.cert.read_bytes())
    workdir = tmp_path / "sentinel"
    workdir.mkdir()
    deployment = start_deployment(workdir, replicas=0, sentinels=1,
                                  tls=Tls(server.cert, server.key, other.pair.cert),
                                  sentinel_tls=Tls(sentinel.cert, sentinel.key, both))
    app = Tidings(deployment.url, key_prefix=new_prefix(), connect_retries=0,
                  security={"tls_ca_file": trusted.pair.cert})
    try:
        with pytest.raises(UntrustedCertificateError) as refused:
            await app.connect()
        assert refused.value.server == f"127.0.0.1:{deployment.primary_port()}"
    finally:
        await app.close()
        deployment.stop()
