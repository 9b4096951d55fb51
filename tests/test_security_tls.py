"""TLS to Redis against a real TLS-only redis-server, with certificates made in the test.

The server listens on a TLS port only (``--port 0``); a producer and a worker work over
it, a wrong CA and a wrong hostname are refused with a typed error, and mutual TLS works
when the server requires client certificates (and refuses a client without one).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certs import Authority, Pair
from servers import private_server
from tidings import Message, Tidings
from tidings.core.errors import ClientCertificateError, ConfigError, UntrustedCertificateError

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="needs redis-server built with TLS (.ci/run installs it)")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("tls"))


def _tls_server(ca: Authority, server: Pair, *, clients: bool) -> Any:
    probe = ca.issue(f"{server.cert.stem}-probe", client=True)  # for the readiness ping
    return private_server(
        str(shutil.which("redis-server")), "--port", "0", "--tls-port", "{port}",
        "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
        "--tls-ca-cert-file", str(ca.pair.cert),
        "--tls-auth-clients", "yes" if clients else "no",
        ready_url=(f"rediss://127.0.0.1:{{port}}/0?ssl_check_hostname=false"
                   f"&ssl_ca_certs={ca.pair.cert}"
                   + (f"&ssl_certfile={probe.cert}&ssl_keyfile={probe.key}"
                      if clients else "")))


@pytest.fixture(scope="module")
def tls_port(ca: Authority) -> Iterator[int]:
    with _tls_server(ca, ca.issue("server"), clients=False) as port:
        yield port


@pytest.fixture(scope="module")
def mtls_port(ca: Authority) -> Iterator[int]:
    with _tls_server(ca, ca.issue("mserver"), clients=True) as port:
        yield port


def _app(port: int, host: str = "127.0.0.1", retries: int = 2, **security: Any) -> Tidings:
    return Tidings(f"rediss://{host}:{port}/0", key_prefix="tls", connect_retries=retries,
                   connect_backoff=0.01, security=security)


async def _round_trip(producer: Tidings, consumer: Tidings) -> list[Any]:
    seen: list[Any] = []
    done = asyncio.Event()

    @consumer.queue("email").handler
    async def handle(msg: Message) -> None:
        seen.append(msg.payload)
        if len(seen) == 3:
            done.set()

    async with producer:
        await producer.queue("email").publish_many([{"to": f"u{i}@example.com"} for i in range(3)])
    worker = consumer.worker()
    task = asyncio.ensure_future(worker.run())
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        worker.stop()
        await task
        await consumer.close()
    return seen


async def test_producer_and_worker_work_over_tls_with_the_ca_setting(
        ca: Authority, tls_port: int) -> None:
    seen = await _round_trip(_app(tls_port, tls_ca_file=ca.pair.cert),
                             _app(tls_port, tls_ca_file=ca.pair.cert))
    assert sorted(p["to"] for p in seen) == ["u0@example.com", "u1@example.com",
                                            "u2@example.com"]


async def test_a_wrong_ca_is_refused_with_a_clear_error_not_retried(
        tmp_path: Path, tls_port: int) -> None:
    other = Authority(tmp_path / "other", "another CA")
    app = _app(tls_port, tls_ca_file=other.pair.cert)
    with pytest.raises(UntrustedCertificateError) as info:
        await app.connect()
    assert info.value.server == f"127.0.0.1:{tls_port}"
    assert "certificate" in info.value.detail


async def test_the_hostname_is_checked_by_default(ca: Authority, tmp_path: Path) -> None:
    # A certificate of the right CA, for another host: refused unless checking is off.
    with _tls_server(ca, ca.issue("elsewhere", hosts=("db.example.com",)),
                     clients=False) as port:
        with pytest.raises(UntrustedCertificateError) as info:
            await _app(port, tls_ca_file=ca.pair.cert).connect()
        assert "match" in info.value.detail.lower() or "hostname" in info.value.detail.lower()
        lax = _app(port, tls_ca_file=ca.pair.cert, tls_check_hostname=False)
        await lax.connect()
        await lax.close()


async def test_turning_verification_off_warns_at_every_start(
        tls_port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "tidings.security")
    for _ in range(2):
        app = _app(tls_port, tls_verify=False)
        await app.connect()
        await app.close()
    warnings = [r for r in caplog.records if "verification is OFF" in r.getMessage()]
    assert len(warnings) == 2


async def test_ssl_cert_reqs_none_in_the_url_warns_too(
        tls_port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "tidings.security")
    app = Tidings(f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=none", key_prefix="tls")
    await app.connect()
    await app.close()
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)


async def test_mutual_tls_works_when_the_server_requires_client_certificates(
        ca: Authority, mtls_port: int) -> None:
    client = ca.issue("worker-1", client=True)
    options = {"tls_ca_file": ca.pair.cert, "tls_cert_file": client.cert,
               "tls_key_file": client.key}
    seen = await _round_trip(_app(mtls_port, **options), _app(mtls_port, **options))
    assert len(seen) == 3
    # TLS 1.3 reports the refusal after the handshake, and on a loaded machine the server's
    # reset can overtake its alert: that attempt looks like an outage and is retried, so
    # give the race room (README "TLS").
    without = _app(mtls_port, retries=10, tls_ca_file=ca.pair.cert)
    with pytest.raises(ClientCertificateError) as info:  # typed, not retried as an outage
        await without.connect()
    assert "CERTIFICATE_REQUIRED" in info.value.detail
    stranger = Authority(ca.directory / "stranger", "stranger CA").issue("x", client=True)
    with pytest.raises(ClientCertificateError):
        await _app(mtls_port, retries=10, tls_ca_file=ca.pair.cert, tls_cert_file=stranger.cert,
                   tls_key_file=stranger.key).connect()


def test_certificate_settings_with_a_plain_url_are_a_config_error(ca: Authority) -> None:
    app = Tidings("redis://127.0.0.1:1/0", security={"tls_ca_file": ca.pair.cert})
    with pytest.raises(ConfigError) as info:
        asyncio.run(app.connect())
    assert info.value.field == "TIDINGS_SECURITY__TLS_CA_FILE"
    assert "not rediss://" in str(info.value)


async def test_metrics_and_health_serve_https_with_the_certificate_settings(
        ca: Authority) -> None:
    import httpx
    from prometheus_client import CollectorRegistry

    from tidings.core.security_settings import SecuritySettings
    from tidings.engine.tls import http_ssl_context
    from tidings.observability.server import ObservabilityServer

    leaf = ca.issue("metrics")
    context = http_ssl_context(SecuritySettings(http_tls_cert_file=leaf.cert,
                                                http_tls_key_file=leaf.key))
    server = ObservabilityServer(CollectorRegistry(), host="127.0.0.1", ssl_context=context)
    port = await server.start()
    try:
        trust = ssl.create_default_context(cafile=str(ca.pair.cert))
        async with httpx.AsyncClient(verify=trust) as http:
            response = await http.get(f"https://127.0.0.1:{port}/metrics")
        assert response.status_code == 200
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        await server.stop()
    with pytest.raises(ConfigError) as info:
        http_ssl_context(SecuritySettings(http_tls_cert_file=leaf.cert))
    assert info.value.field == "TIDINGS_SECURITY__HTTP_TLS_KEY_FILE"


def test_postgres_parameters_verify_the_server_by_default(
        ca: Authority, caplog: pytest.LogCaptureFixture) -> None:
    from tidings.core.security_settings import SecuritySettings
    from tidings.engine.tls import postgres_ssl

    assert postgres_ssl(SecuritySettings(postgres_sslrootcert=ca.pair.cert)) == {
        "sslmode": "verify-full", "sslrootcert": str(ca.pair.cert)}
    caplog.set_level(logging.WARNING, "tidings.security")
    assert postgres_ssl(SecuritySettings(postgres_sslmode="require")) == {"sslmode": "require"}
    assert "not verified" in caplog.text


async def test_no_password_or_credentialed_url_is_ever_logged(
        ca: Authority, tls_port: int, caplog: pytest.LogCaptureFixture) -> None:
    from redis.asyncio import Redis

    from tidings import AuthenticationFailedError
    from tidings.engine.tls import redacted

    secret = "S3cret-never-logged-9f2"
    admin = Redis.from_url(f"rediss://127.0.0.1:{tls_port}/0", ssl_ca_certs=str(ca.pair.cert))
    await admin.execute_command("ACL", "SETUSER", "app", "reset", "on", f">{secret}", "~*",
                                "+@all")
    await admin.aclose()
    caplog.set_level(logging.DEBUG)
    url = f"rediss://app:{secret}@127.0.0.1:{tls_port}/0"
    consumer = Tidings(url, key_prefix="tls-secret", security={"tls_ca_file": ca.pair.cert},
                       log_level="DEBUG")
    seen = await _round_trip(Tidings(url, key_prefix="tls-secret",
                                     security={"tls_ca_file": ca.pair.cert}), consumer)
    assert len(seen) == 3
    wrong = Tidings(url.replace(secret, secret + "x"), key_prefix="tls-secret",
                    security={"tls_ca_file": ca.pair.cert})
    with pytest.raises(AuthenticationFailedError) as info:
        await wrong.connect()
    assert secret not in str(info.value)
    assert redacted(url) == f"rediss://app:***@127.0.0.1:{tls_port}/0"
    assert caplog.records and secret not in caplog.text
