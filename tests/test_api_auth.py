"""Who may call what over HTTP, what is audited, and the one error shape of every refusal."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from api_helpers import Api, error_of, serve
from tidings import Tidings
from tidings.api import create_api
from tidings.security.audit import Audit
from tidings.security.tokens import TokenStore


@pytest.fixture
async def api(make_app: Callable[..., Tidings]) -> AsyncIterator[Api]:
    async with serve(make_app) as served:
        yield served


async def test_a_call_without_a_token_is_refused_with_401(api: Api) -> None:
    r = await api.http.get("/v1/queues")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert error_of(r)["type"] == "InvalidTokenError"
    assert error_of(r)["field"] == "Authorization"


async def test_a_wrong_token_and_a_wrong_scheme_are_refused_with_401(api: Api) -> None:
    wrong = await api.http.get("/v1/queues", headers={"Authorization": "Bearer tdg_x_y"})
    basic = await api.http.get("/v1/queues", headers={"Authorization": "Basic abc"})
    assert wrong.status_code == basic.status_code == 401
    assert api.tokens["admin"] not in wrong.text


async def test_a_read_only_principal_reads_but_every_change_is_refused_and_audited(
        api: Api) -> None:
    assert (await api.get("/v1/queues", who="reader")).status_code == 200
    assert (await api.get("/v1/queues/email/dead-letters", who="reader")).status_code == 200
    r = await api.post("/v1/queues/email/pause", who="reader")
    assert r.status_code == 403
    assert error_of(r) == {"type": "NotAuthorizedError", "field": "permission",
                           "reason": error_of(r)["reason"]}
    assert "queue:pause:email" in error_of(r)["reason"]
    publish = await api.post("/v1/queues/email/messages", {"payload": 1}, who="reader")
    assert publish.status_code == 403
    assert not (await api.app.flow.pause_state("email")).paused
    records = await api.app.extension(Audit).entries()
    assert [(a.principal, a.action, a.outcome) for a in records] == [
        ("ops-reader", "queue.pause", "denied")]


async def test_a_publisher_publishes_to_its_queue_only_and_sees_no_queues(api: Api) -> None:
    ok = await api.post("/v1/queues/email/messages", {"payload": 1}, who="publisher")
    other = await api.post("/v1/queues/sms/messages", {"payload": 1}, who="publisher")
    assert (ok.status_code, other.status_code) == (201, 403)
    assert (await api.get("/v1/queues", who="publisher")).json() == []
    me = (await api.get("/v1/me", who="publisher")).json()
    assert me == {"name": "orchestrator", "kind": "token", "scopes": ["publish:email"]}


async def test_every_change_leaves_allowed_and_done_records(api: Api) -> None:
    await api.post("/v1/queues/email/pause")
    await api.post("/v1/queues/email/resume")
    msg_id = await api.app.queues["email"].publish(1, delay=60)
    await api.call("DELETE", f"/v1/queues/email/delayed/{msg_id}")
    records = await api.app.extension(Audit).entries()
    assert [(a.action, a.outcome) for a in records] == [
        ("queue.pause", "allowed"), ("queue.pause", "done"),
        ("queue.resume", "allowed"), ("queue.resume", "done"),
        ("delayed.cancel", "allowed"), ("delayed.cancel", "done")]
    assert {a.principal for a in records} == {"ops-admin"}
    assert records[-1].detail == {"message": msg_id}


async def test_a_change_that_fails_is_audited_as_failed(api: Api) -> None:
    r = await api.post("/v1/queues/email/delayed/nope/reschedule", {"delay": 5})
    assert r.status_code == 404
    last = (await api.app.extension(Audit).entries())[-1]
    assert (last.action, last.outcome, last.detail["error"]) == (
        "delayed.reschedule", "failed", "MessageNotFoundError")


async def test_anonymous_access_is_off_by_default_and_limited_to_its_scopes(
        make_app: Callable[..., Tidings]) -> None:
    async with serve(make_app, api={"allow_anonymous": True,
                                    "anonymous_scopes": ["queue:inspect:*"]}) as api:
        assert (await api.http.get("/v1/queues")).status_code == 200
        r = await api.http.post("/v1/queues/email/messages", json={"payload": 1})
        assert r.status_code == 403 and "anonymous" in error_of(r)["reason"]


async def test_a_revoked_token_is_refused_once_the_cache_forgets_it(
        make_app: Callable[..., Tidings]) -> None:
    async with serve(make_app, api={"auth_cache_seconds": 0}) as api:
        assert (await api.get("/v1/queues")).status_code == 200
        store = TokenStore(api.app)
        for record in await store.list():
            await store.revoke(record.id)
        assert (await api.get("/v1/queues")).status_code == 401


# -- the error shape of every 4xx ----------------------------------------------------------


async def test_request_validation_errors_name_the_field(api: Api) -> None:
    r = await api.post("/v1/queues/email/messages", {"payload": 1, "priority": "urgent"})
    assert r.status_code == 422 and error_of(r)["field"] == "priority"
    r = await api.post("/v1/queues/email/messages/batch",
                       {"messages": [{"payload": 1}, {"payload": 2, "delay": "soon"}]})
    assert r.status_code == 422 and error_of(r)["field"] == "messages[1].delay"
    r = await api.post("/v1/queues/email/messages", {"payload": 1, "colour": "red"})
    assert r.status_code == 422 and error_of(r)["field"] == "colour"
    r = await api.http.post("/v1/queues/email/messages", content=b"{not json",
                            headers={**api.auth(), "Content-Type": "application/json"})
    assert r.status_code == 422 and error_of(r)["type"] == "ValidationError"
    r = await api.get("/v1/queues/email/dead-letters", params={"limit": 0})
    assert r.status_code == 422 and error_of(r)["field"] == "limit"


async def test_unknown_routes_methods_and_large_bodies_have_the_error_shape(
        make_app: Callable[..., Tidings]) -> None:
    async with serve(make_app, api={"max_body_bytes": 2048}) as api:
        missing = await api.get("/v1/nothing-here")
        method = await api.call("DELETE", "/v1/queues")
        big = await api.post("/v1/queues/email/messages", {"payload": "x" * 5000})
        assert (missing.status_code, method.status_code, big.status_code) == (404, 405, 413)
        assert error_of(missing)["type"] == "NotFound"
        assert error_of(big) == {"type": "BodyTooLarge", "field": "body",
                                 "reason": error_of(big)["reason"]}


async def test_conflicts_are_409(api: Api) -> None:
    body = {"id": "digest", "queue": "email", "every": 3600}
    assert (await api.post("/v1/schedules", body)).status_code == 201
    again = await api.post("/v1/schedules", body)
    assert again.status_code == 409 and error_of(again)["type"] == "ScheduleExistsError"


async def test_an_unreachable_server_is_a_503_not_a_500(
        make_app: Callable[..., Tidings]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    app = Tidings(f"redis://127.0.0.1:{port}", connect_retries=0, key_prefix="api-down",
                  api={"allow_anonymous": True, "anonymous_scopes": ["queue:inspect:*"]})
    transport = httpx.ASGITransport(app=create_api(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        r = await http.get("/v1/queues")
        health = await http.get("/v1/health")
    assert r.status_code == 503 and error_of(r)["type"] == "BrokerUnavailableError"
    assert health.status_code == 503


async def test_cors_is_off_by_default_and_on_for_the_listed_origins(
        api: Api, make_app: Callable[..., Tidings]) -> None:
    preflight = {"Origin": "https://ops.example.com", "Access-Control-Request-Method": "POST"}
    off = await api.http.options("/v1/queues/email/messages", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    async with serve(make_app, api={"cors_origins": ["https://ops.example.com"]}) as cors:
        on = await cors.http.options("/v1/queues/email/messages", headers=preflight)
        assert on.headers["access-control-allow-origin"] == "https://ops.example.com"
