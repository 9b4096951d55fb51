"""Operating over HTTP: queues, messages, dead letters, breakers, workers, health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from api_helpers import Api, error_of, serve
from conftest import Recorder
from tidings import DeadLetter, EventKind, Message, Tidings


@pytest.fixture
async def api(make_app: Callable[..., Tidings], recorder: Recorder) -> AsyncIterator[Api]:
    async with serve(make_app, middleware=[recorder]) as served:
        yield served


async def _dead_letters(api: Api, recorder: Recorder, count: int = 4) -> list[str]:
    """``count`` dead letters in ``alerts``: odd payloads opted out, even ones timed out."""
    q = api.app.queue("alerts", max_attempts=1)

    @q.handler
    async def handle(msg: Message) -> None:
        if msg.payload % 2:
            raise DeadLetter("opted out")
        raise TimeoutError("provider timeout")

    ids = await q.publish_many(range(count))
    async with api.app.worker(["alerts"]):
        await recorder.wait_count(EventKind.DEAD_LETTERED, count)
    return ids


async def test_queue_list_shows_depth_per_lane_delayed_and_dead(api: Api) -> None:
    email = api.app.queues["email"]
    await email.publish("a", priority="high")
    await email.publish("b")
    await email.publish("c", delay=3600)
    r = await api.get("/v1/queues")
    assert r.status_code == 200
    row = next(q for q in r.json() if q["name"] == "email")
    assert row["lanes"] == {"high": 1, "normal": 1, "low": 0} and row["depth"] == 2
    assert row["delayed"] == 1 and row["dead"] == 0 and row["paused"] is False
    assert row["oldest_age"] is not None and row["in_flight"] == 0


async def test_queue_detail_weights_and_pause_resume(api: Api) -> None:
    r = await api.call("PUT", "/v1/queues/email/weights", {"high": 5, "normal": 2, "low": 1})
    assert r.status_code == 200, r.text
    assert (await api.post("/v1/queues/email/pause")).json()["paused"] is True
    detail = (await api.get("/v1/queues/email")).json()
    assert detail["weights"] == {"high": 5, "normal": 2, "low": 1} and detail["paused"]
    assert (await api.app.flow.pause_state("email")).paused
    assert (await api.post("/v1/queues/email/resume")).json()["paused"] is False
    assert not (await api.app.flow.pause_state("email")).paused


async def test_bad_weights_are_refused_with_the_python_apis_error(api: Api) -> None:
    r = await api.call("PUT", "/v1/queues/email/weights", {"high": 0, "normal": 0, "low": 0})
    assert r.status_code == 422 and error_of(r)["type"] in ("ConfigError", "ValidationError")


async def test_inspect_a_message_by_id_and_cancel_and_reschedule_a_delayed_one(
        api: Api) -> None:
    q = api.app.queues["email"]
    msg_id = await q.publish({"to": "x"}, delay=3600, correlation_id="c-1")
    found = (await api.get(f"/v1/messages/{msg_id}")).json()
    assert found["state"] == "delayed" and found["payload"] == {"to": "x"}
    assert found["queue"] == "email" and found["history"] is None  # no ledger configured
    moved = await api.post(f"/v1/queues/email/delayed/{msg_id}/reschedule", {"delay": 60})
    assert moved.status_code == 200, moved.text
    cancelled = await api.call("DELETE", f"/v1/queues/email/delayed/{msg_id}")
    assert cancelled.json()["cancelled"] is True
    assert await q.inspect(msg_id) is None
    again = await api.call("DELETE", f"/v1/queues/email/delayed/{msg_id}")
    assert again.status_code == 404 and error_of(again)["type"] == "MessageNotFoundError"


async def test_an_encrypted_payload_is_not_shown(make_app: Callable[..., Tidings]) -> None:
    import base64
    import os

    key = base64.b64encode(os.urandom(32)).decode()
    async with serve(make_app, security={"keys": f"k1:{key}"}) as api:
        secret = api.app.queue("secret", encryption="aes-256-gcm")
        msg_id = await secret.publish({"card": "4111"})
        shown = (await api.get(f"/v1/queues/secret/messages/{msg_id}")).json()
        assert shown["encrypted"] is True and shown["payload"] is None
        assert "4111" not in str(shown)


async def test_dead_letters_list_filter_show_replay_and_purge(api: Api,
                                                            recorder: Recorder) -> None:
    await _dead_letters(api, recorder)
    listed = (await api.get("/v1/queues/alerts/dead-letters",
                            params={"error_type": "TimeoutError"})).json()
    assert len(listed) == 2 and {d["reason"] for d in listed} == {"max_attempts"}
    one = (await api.get(f"/v1/queues/alerts/dead-letters/{listed[0]['id']}")).json()
    assert one["error"]["type"] == "TimeoutError" and "provider timeout" in str(one["error"])
    replayed = await api.post("/v1/queues/alerts/dead-letters/replay",
                              {"error_type": "TimeoutError", "rate": 100})
    assert replayed.json()["count"] == 2
    stats = await api.app.queues["alerts"].stats()
    assert stats.depth == 2 and stats.dead == 2
    purged = await api.post("/v1/queues/alerts/dead-letters/purge", {"reason": "opted out"})
    assert purged.json()["count"] == 2
    assert (await api.app.queues["alerts"].stats()).dead == 0


async def test_replay_and_purge_need_an_explicit_selection(api: Api) -> None:
    r = await api.post("/v1/queues/email/dead-letters/purge", {})
    assert r.status_code == 422 and error_of(r)["field"] == "ids"


async def test_workers_show_alive_queues_and_in_flight(api: Api) -> None:
    q = api.app.queues["sms"]
    started, release = asyncio.Event(), asyncio.Event()

    @q.handler
    async def handle(msg: Message) -> None:
        started.set()
        await release.wait()

    await q.publish("hold")
    async with api.app.worker(["sms"]):
        await asyncio.wait_for(started.wait(), 20)
        workers = (await api.get("/v1/workers")).json()
        release.set()
    mine = [w for w in workers if "sms" in w["queues"]]
    assert len(mine) == 1 and mine[0]["alive"] is True
    assert mine[0]["in_flight"] == {"sms": 1} and mine[0]["last_heartbeat"] > 0


async def test_breakers_list_and_reset(api: Api) -> None:
    guard = api.app.flow.breaker("smtp", failure_threshold=1).protect("email")
    await guard._cb().record("smtp", False)  # one failure trips it
    rows = (await api.get("/v1/breakers")).json()
    assert [(r["name"], r["state"]) for r in rows] == [("smtp", "open")]
    r = await api.post("/v1/breakers/smtp/reset")
    assert r.status_code == 200 and r.json()["state"] == "closed"
    unknown = await api.post("/v1/breakers/nope/reset")
    assert unknown.status_code == 422 and error_of(unknown)["field"] == "name"


async def test_health_needs_no_token_and_reports_ready(api: Api) -> None:
    r = await api.http.get("/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


async def test_the_api_mounts_in_a_users_asgi_app_with_a_ui_at_ui(
        make_app: Callable[..., Tidings]) -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from api_helpers import make_tokens
    from tidings.api import create_api

    app = make_app()
    app.queue("email")
    tokens = await make_tokens(app)  # connects the app; the mounted API's lifespan never runs

    async def page(request: object) -> PlainTextResponse:
        return PlainTextResponse("dashboard")

    ui = Starlette(routes=[Route("/", page)])
    host = Starlette(routes=[Mount("/tidings", create_api(app, ui=ui))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host),
                                 base_url="http://host") as http:
        r = await http.post("/tidings/v1/queues/email/messages", json={"payload": 1},
                            headers={"Authorization": f"Bearer {tokens['admin']}"})
        assert r.status_code == 201
        assert (await http.get("/tidings/ui/")).text == "dashboard"
    assert (await app.queues["email"].stats()).depth == 1
