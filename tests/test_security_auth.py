"""Principals, API tokens, OIDC JWTs and the audit record of management operations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from conftest import tidings, with_app
from tidings import Tidings, ValidationError
from tidings.core.clock import ManualClock
from tidings.core.errors import InvalidTokenError, NotAuthorizedError
from tidings.security.audit import Audit
from tidings.security.oidc import JwtVerifier
from tidings.security.principals import Principal, grants
from tidings.security.tokens import TokenStore


def test_scopes_grant_segment_by_segment_and_admin_grants_all() -> None:
    assert grants("publish:*", "publish:email") and grants("dlq:*:sms", "dlq:replay:sms")
    assert not grants("dlq:*:sms", "dlq:replay:email")
    assert not grants("publish:email", "publish:sms") and not grants("dlq:read", "dlq:read:x")
    assert grants("admin", "tokens:manage")
    principal = Principal.of("ci", ["consume:*", "dlq:replay:sms"])
    assert principal.allows("consume:email") and not principal.allows("dlq:purge:sms")
    with pytest.raises(NotAuthorizedError) as info:
        principal.require("dlq:purge:sms")
    assert str(info.value) == "'ci' lacks the permission 'dlq:purge:sms'"
    with pytest.raises(ValidationError) as bad:
        Principal.of("x", ["publish"])
    assert bad.value.field == "scope"


async def test_tokens_are_stored_hashed_scoped_expire_and_revoke(
        make_app: Callable[..., Tidings]) -> None:
    clock = ManualClock()
    app = make_app(clock=clock)
    store = TokenStore(app)
    token, _ = await store.create("ci", ["publish:email", "dlq:*:sms"], expires_in=3600)
    principal = await store.authenticate(token)
    assert principal == Principal.of("ci", ["publish:email", "dlq:*:sms"])
    secret = token.removeprefix("tdg_").partition("_")[2]  # url-safe: it may hold "_"
    stored = await app.broker.client.hgetall(app.key_space.tokens)
    assert secret.encode() not in b"".join(stored.values())  # only its SHA-256
    assert [r.name for r in await store.list()] == ["ci"]
    for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), "tdg_nope_x", "abc"):
        with pytest.raises(InvalidTokenError) as info:
            await store.authenticate(forged)
        assert secret not in str(info.value)
    clock.advance(3600)
    with pytest.raises(InvalidTokenError, match="has expired"):
        await store.authenticate(token)
    other, made = await store.create("api", ["admin"])
    assert await store.revoke(made.id) and not await store.revoke(made.id)
    with pytest.raises(InvalidTokenError, match="unknown or revoked"):
        await store.authenticate(other)


# -- OIDC ----------------------------------------------------------------------------------


def _jwks(tmp_path: Path) -> tuple[Any, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, "kid": "key-1", "use": "sig",
                                          "alg": "RS256"}]}))
    return key, path


def _token(key: Any, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "https://idp.example", "aud": "tidings", "sub": "alice", "exp": now + 60,
            "iat": now, "scope": "publish:email dlq:read:*", **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "key-1"})


def test_oidc_tokens_are_verified_against_a_jwks_file(tmp_path: Path) -> None:
    key, path = _jwks(tmp_path)
    verifier = JwtVerifier(path, issuer="https://idp.example", audience="tidings")
    principal = verifier.verify(_token(key))
    assert (principal.name, principal.kind) == ("alice", "oidc")
    assert principal.allows("dlq:read:sms") and not principal.allows("publish:sms")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "wrong audience": _token(key, aud="other"),
        "wrong issuer": _token(key, iss="https://evil.example"),
        "expired": _token(key, exp=int(time.time()) - 3600),
        "another key": _token(stranger),
        "no subject": _token(key, sub=None),
        "a symmetric algorithm": jwt.encode(
            {"iss": "https://idp.example", "aud": "tidings", "sub": "x",
             "exp": int(time.time()) + 60}, "a-shared-secret-of-32-bytes-long!", algorithm="HS256",
            headers={"kid": "key-1"}),
    }
    accepted = []
    for case, token in refused.items():
        try:
            verifier.verify(token)
            accepted.append(case)
        except InvalidTokenError as exc:
            assert token not in str(exc)
    assert accepted == []


async def test_oidc_tokens_are_verified_against_a_jwks_url(tmp_path: Path) -> None:
    key, path = _jwks(tmp_path)
    async def jwks(_: web.Request) -> web.Response:
        return web.json_response(json.loads(path.read_text()))

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        verifier = JwtVerifier(f"http://127.0.0.1:{port}/jwks", issuer="https://idp.example",
                               audience="tidings")
        principal = await verifier.verify_async(_token(key, sub="bob"))
        assert principal.name == "bob"
    finally:
        await runner.cleanup()


# -- the CLI: authorised and audited --------------------------------------------------------


def test_token_commands_are_authorised_and_audited(cli_env: dict[str, str]) -> None:
    made = json.loads(tidings(cli_env, "tokens", "create", "--name", "ci", "--scope",
                              "publish:email", "--expires", "1d", "--json").stdout)
    assert made["token"].startswith("tdg_") and made["scopes"] == ["publish:email"]
    manager = json.loads(tidings(cli_env, "tokens", "create", "--name", "ops", "--scope",
                                 "tokens:manage", "--json").stdout)
    listed = json.loads(tidings(cli_env, "tokens", "list", "--token", manager["token"],
                                "--json").stdout)
    assert {t["name"] for t in listed} == {"ci", "ops"}
    assert "token" not in listed[0] and "hash" not in listed[0]
    refused = tidings(cli_env, "tokens", "revoke", manager["id"], "--token", made["token"],
                      code=4)
    assert "'ci' lacks the permission 'tokens:manage'" in refused.stderr
    bad = tidings(cli_env, "tokens", "list", "--token", "tdg_x_y", code=4)
    assert "invalid token" in bad.stderr
    tidings(cli_env, "tokens", "revoke", made["id"], "--token", manager["token"])

    async def entries(app: Tidings) -> list[Any]:
        return await app.extension(Audit).entries()

    log = [(e.principal, e.action, e.outcome) for e in with_app(cli_env, entries)]
    assert log[-5:] == [("ops", "tokens.list", "allowed"), ("ops", "tokens.list", "done"),
                        ("ci", "tokens.revoke", "denied"), ("ops", "tokens.revoke", "allowed"),
                        ("ops", "tokens.revoke", "done")]
    assert all(made["token"] not in str(e) for e in with_app(cli_env, entries))


def test_management_commands_check_the_tokens_scope_and_leave_audit_records(
        known_env: dict[str, str]) -> None:
    def token(*scopes: str) -> str:
        args = [a for s in scopes for a in ("--scope", s)]
        made = tidings(known_env, "tokens", "create", "--name", scopes[0], *args, "--json")
        return str(json.loads(made.stdout)["token"])

    reader, purger = token("dlq:read:email"), token("dlq:purge:*")
    refused = tidings(known_env, "dlq", "purge", "email", "--all", "--yes", code=4,
                      TIDINGS_TOKEN=reader)
    assert "'dlq:read:email' lacks the permission 'dlq:purge:email'" in refused.stderr
    tidings(known_env, "dlq", "purge", "email", "--all", "--yes", code=1,  # none to purge
            TIDINGS_TOKEN=purger)
    tidings(known_env, "pause", "email")  # no token: the local operator
    tidings(known_env, "pause", "sms", code=4, TIDINGS_TOKEN=purger)

    async def entries(app: Tidings) -> list[Any]:
        return await app.extension(Audit).entries()

    log = [(e.principal, e.action, e.target, e.outcome)
           for e in with_app(known_env, entries) if not e.action.startswith("tokens.")]
    local = log[3][0]
    assert local.startswith("local:")
    assert log == [("dlq:read:email", "dlq.purge", "email", "denied"),
                   ("dlq:purge:*", "dlq.purge", "email", "allowed"),
                   ("dlq:purge:*", "dlq.purge", "email", "done"),
                   (local, "queue.pause", "email", "allowed"),
                   (local, "queue.pause", "email", "done"),
                   ("dlq:purge:*", "queue.pause", "sms", "denied")]
