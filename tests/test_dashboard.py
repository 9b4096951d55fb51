"""The web dashboard over ASGI (httpx, no browser): every page, action, permission, CSRF."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from conftest import Recorder
from dashboard_helpers import READ_ONLY, csrf_of, fill, log_in, post, token
from tidings import Tidings
from tidings.core.settings import load_settings
from tidings.dashboard import create_dashboard
from tidings.security.audit import Audit

Client = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def client_of(app: Tidings) -> AsyncIterator[Client]:
    clients: list[httpx.AsyncClient] = []

    def make(web: Any = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=web or create_dashboard(app))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://dash"))
        return clients[-1]

    yield make
    for c in clients:
        await c.aclose()


async def admin(app: Tidings, client_of: Client) -> tuple[httpx.AsyncClient, str]:
    client = client_of()
    return client, await log_in(client, await token(app, ["admin"]))


async def outcomes(app: Tidings, action: str) -> list[str]:
    return [r.outcome for r in await app.extension(Audit).entries() if r.action == action]


async def test_pages_send_a_visitor_to_the_login_page(app: Tidings, client_of: Client) -> None:
    await app.connect()
    client = client_of()
    for path in ("/", "/queues/sms", "/trace", "/workers"):
        reply = await client.get(path)
        assert reply.status_code == 303 and reply.headers["location"].startswith("/login")
    fragment = await client.get("/fragments/queues", headers={"HX-Request": "true"})
    assert fragment.headers["HX-Redirect"].startswith("/login")


async def test_login_refuses_a_bad_token_and_sets_a_strict_httponly_cookie(
        app: Tidings, client_of: Client) -> None:
    client = client_of()
    form = await client.get("/login")
    bad = await client.post("/login", data={"csrf": csrf_of(form.text), "token": "tdg_x_y"})
    assert bad.status_code == 401 and "unknown or revoked token" in bad.text
    good = await client.post("/login", data={"csrf": csrf_of(form.text),
                                             "token": await token(app, ["admin"])})
    assert good.status_code == 303
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "tdg_" not in good.headers["set-cookie"]  # the token never goes in the cookie


async def test_every_page_shows_the_real_queues(app: Tidings, recorder: Recorder,
                                                client_of: Client) -> None:
    ids = await fill(app, recorder)
    client, _ = await admin(app, client_of)
    overview = (await client.get("/")).text
    assert 'data-queue="sms"' in overview and 'data-queue="email"' in overview
    assert 'hx-get="/fragments/queues"' in overview and "/static/htmx.min.js" in overview
    fragment = (await client.get("/fragments/queues")).text
    assert "<svg" in fragment and "<html" not in fragment
    queue = (await client.get("/queues/sms")).text
    assert "max_attempts" in queue and "opted out" in queue and "Pause" in queue
    dlq = (await client.get("/queues/sms/dlq", params={"error_type": "TimeoutError"})).text
    assert dlq.count("<tr data-id=") == 2 and "provider timeout" in dlq
    one = (await client.get(f"/queues/sms/dlq/{ids[0]}")).text
    assert "TimeoutError" in one and "Traceback" in one and "Replay" in one
    trace = (await client.get("/trace", params={"q": ids[1]})).text
    assert "dead" in trace and "opted out" in trace
    for path in ("/schedules", "/breakers", "/workers"):
        assert (await client.get(path)).status_code == 200
    assert (await client.get("/static/htmx.min.js")).status_code == 200


async def test_replay_asks_first_then_queues_the_message_again_and_audits(
        app: Tidings, recorder: Recorder, client_of: Client) -> None:
    ids = await fill(app, recorder)
    client, csrf = await admin(app, client_of)
    sms = app.get_queue("sms")
    asked = await post(client, "/queues/sms/dlq/replay", csrf, ids=[ids[0]])
    assert asked.status_code == 200 and "Yes, replay" in asked.text
    assert await sms.dlq.count() == 4  # nothing happened before the confirmation
    done = await post(client, "/queues/sms/dlq/replay", csrf, ids=[ids[0]], confirmed="1")
    assert done.status_code == 303
    info = await sms.inspect(ids[0])
    assert info is not None and info.state == "queued" and await sms.dlq.count() == 3
    assert await outcomes(app, "dlq.replay") == ["allowed", "done"]
    assert "replayed 1" in (await client.get("/queues/sms/dlq")).text


async def test_purge_by_filter_after_confirmation(app: Tidings, recorder: Recorder,
                                                  client_of: Client) -> None:
    await fill(app, recorder)
    client, csrf = await admin(app, client_of)
    asked = await post(client, "/queues/sms/dlq/purge", csrf, all="1", reason="opted out")
    assert "every dead letter with reason opted out" in asked.text
    await post(client, "/queues/sms/dlq/purge", csrf, all="1", reason="opted out",
               confirmed="1")
    left = await app.get_queue("sms").dlq.list()
    assert [e.reason for e in left] == ["max_attempts"] * 2
    nothing = await post(client, "/queues/sms/dlq/purge", csrf)
    assert nothing.status_code == 400 and "ids:" in nothing.text


async def test_pause_resume_and_weights_act_on_the_queue_and_are_audited(
        app: Tidings, recorder: Recorder, client_of: Client) -> None:
    await fill(app, recorder)
    client, csrf = await admin(app, client_of)
    assert (await post(client, "/queues/email/pause", csrf)).status_code == 303
    assert (await app.flow.pause_state("email")).paused
    assert "Resume" in (await client.get("/queues/email")).text
    await post(client, "/queues/email/resume", csrf)
    assert not (await app.flow.pause_state("email")).paused
    await post(client, "/queues/email/weights", csrf, high="9", normal="2", low="1")
    stored = await app.broker.client.hget(app.get_queue("email").keys.config, "weights")
    assert stored == b"9,2,1"
    assert await outcomes(app, "queue.pause") == ["allowed", "done"]
    assert await outcomes(app, "queue.weights") == ["allowed", "done"]
    bad = await post(client, "/queues/email/weights", csrf, high="x", normal="2", low="1")
    assert bad.status_code == 400 and "high: must be a whole number" in bad.text
    assert (await client.get("/queues/nope")).status_code == 404


async def test_a_post_without_the_csrf_token_is_refused(app: Tidings, recorder: Recorder,
                                                       client_of: Client) -> None:
    await fill(app, recorder)
    client, _ = await admin(app, client_of)
    for csrf in ("", "forged"):
        reply = await post(client, "/queues/email/pause", csrf)
        assert reply.status_code == 403 and "CSRF" in reply.text
    assert not (await app.flow.pause_state("email")).paused
    other = client_of()  # another session's token is no good either
    await log_in(other, await token(app, ["admin"], "other"))
    theirs = csrf_of((await other.get("/")).text)
    assert (await post(client, "/queues/email/pause", theirs)).status_code == 403


async def test_a_read_only_principal_sees_no_buttons_and_is_refused(
        app: Tidings, recorder: Recorder, client_of: Client) -> None:
    ids = await fill(app, recorder)
    client = client_of()
    csrf = await log_in(client, await token(app, READ_ONLY, "viewer"))
    for path in ("/queues/sms", "/queues/sms/dlq", f"/queues/sms/dlq/{ids[0]}"):
        html = (await client.get(path)).text
        main = html.split("</header>", 1)[1]
        assert 'method="post"' not in main and "Replay" not in main, path
        assert 'name="high"' not in main and 'type="checkbox"' not in main
    for path, data in (("/queues/sms/pause", {}), ("/queues/sms/dlq/replay",
                                                   {"ids": ids[0], "confirmed": "1"})):
        refused = await post(client, path, csrf, **data)
        assert refused.status_code == 403 and "needs the permission" in refused.text
    assert await app.get_queue("sms").dlq.count() == 4
    assert await outcomes(app, "dlq.replay") == ["denied"]
    none = client_of()
    await log_in(none, await token(app, ["publish:sms"], "publisher"))
    assert (await none.get("/queues/sms/dlq")).status_code == 403


async def test_a_revoked_token_ends_its_session(app: Tidings, client_of: Client) -> None:
    from tidings.security.auth import Authenticator

    secret = await token(app, ["admin"])
    client = client_of()
    await log_in(client, secret)
    token_id = secret.removeprefix("tdg_").partition("_")[0]
    assert await app.extension(Authenticator).tokens.revoke(token_id)
    assert (await client.get("/")).status_code == 303


async def test_mounted_at_ui_every_link_and_redirect_keeps_the_prefix(
        app: Tidings, recorder: Recorder, client_of: Client) -> None:
    await fill(app, recorder)
    client = client_of(Starlette(routes=[Mount("/ui", app=create_dashboard(app))]))
    first = await client.get("/ui/queues/sms")
    assert first.headers["location"] == "/ui/login?next=/ui/queues/sms"
    csrf = await log_in(client, await token(app, ["admin"]), root="/ui")
    html = (await client.get("/ui/")).text
    assert 'href="/ui/queues/sms"' in html and 'src="/ui/static/htmx.min.js"' in html
    paused = await post(client, "/ui/queues/sms/pause", csrf)
    assert paused.headers["location"] == "/ui/queues/sms"


async def test_login_goes_back_only_to_a_page_of_the_dashboard(app: Tidings,
                                                              client_of: Client) -> None:
    client = client_of()
    form = await client.get("/login")
    reply = await client.post("/login", data={"csrf": csrf_of(form.text), "next":
                                              "https://evil.example/", "token":
                                              await token(app, ["admin"])})
    assert reply.headers["location"] == "/"


async def test_breakers_schedules_and_campaigns_actions(app: Tidings, recorder: Recorder,
                                                        client_of: Client) -> None:
    from datetime import timedelta

    await fill(app, recorder)
    from tidings.flow.breaker import CircuitBreaker

    breaker = CircuitBreaker(app.broker.client, prefix=app.settings.key_prefix,
                             failure_threshold=1, min_calls=1)
    await breaker.record("sms-provider", False)
    assert (await breaker.state("sms-provider")).state.value == "open"
    await app.schedules.add("digest", queue="email", every=timedelta(hours=1))
    client, csrf = await admin(app, client_of)
    assert 'data-breaker="sms-provider"' in (await client.get("/breakers")).text
    await post(client, "/breakers/sms-provider/reset", csrf)
    assert (await breaker.state("sms-provider")).state.value == "closed"
    assert await outcomes(app, "breaker.reset") == ["allowed", "done"]
    await post(client, "/schedules/digest/pause", csrf)
    assert (await app.schedules.get("digest")).paused
    await post(client, "/schedules/digest/resume", csrf)
    assert not (await app.schedules.get("digest")).paused
    assert (await post(client, "/schedules/nope/pause", csrf)).status_code == 404


def test_dashboard_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_DASHBOARD__SESSION_SECRET", "s3cret")
    monkeypatch.setenv("TIDINGS_DASHBOARD__REFRESH_SECONDS", "5")
    settings = load_settings()
    assert settings.dashboard.session_secret is not None
    assert settings.dashboard.session_secret.get_secret_value() == "s3cret"
    assert settings.dashboard.refresh_seconds == 5 and "s3cret" not in repr(settings)


def test_every_template_and_static_file_ships_in_the_wheel() -> None:
    import fnmatch
    import tomllib
    from pathlib import Path

    import tidings.dashboard

    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["tidings"]
    package = Path(tidings.dashboard.__file__).parent
    files = [p for d in ("templates", "static") for p in (package / d).rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        name = path.relative_to(package.parent).as_posix()
        assert any(fnmatch.fnmatch(name, g) for g in globs), name
    assert (package / "static" / "HTMX_VERSION").read_text().strip().startswith("2.")
    assert (package / "static" / "htmx.LICENSE").read_text().startswith(("Zero-Clause", "BSD"))


async def test_an_oidc_login_lasts_until_its_token_expires(
        make_app: Callable[..., Tidings], tmp_path: Any) -> None:
    import json
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    from tidings.core.clock import ManualClock

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(key.public_key())),
                                          "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    clock = ManualClock(time.time())
    app = make_app(clock=clock, security={"oidc_jwks": str(jwks), "oidc_audience": "tidings",
                                          "oidc_issuer": "https://idp.example"})
    await app.connect()
    claims = {"iss": "https://idp.example", "aud": "tidings", "sub": "alice",
              "exp": int(clock.time()) + 60, "scope": "dlq:read:*"}
    bearer = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_dashboard(app)),
                                 base_url="http://dash") as client:
        await log_in(client, bearer)
        assert "alice" in (await client.get("/workers")).text
        clock.advance(61)
        assert (await client.get("/workers")).status_code == 303
