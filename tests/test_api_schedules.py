"""Schedules and campaigns over HTTP: create, list, show, update, pause, resume, delete,
progress and cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from api_helpers import Api, error_of, serve
from tidings import Tidings
from tidings.security.audit import Audit


@pytest.fixture
async def api(make_app: Callable[..., Tidings]) -> AsyncIterator[Api]:
    async with serve(make_app) as served:
        yield served


async def test_schedule_lifecycle(api: Api) -> None:
    made = await api.post("/v1/schedules", {
        "id": "digest", "queue": "email", "cron": "0 9 * * MON",
        "timezone": "America/New_York", "payload": {"kind": "digest"}})
    assert made.status_code == 201, made.text
    assert made.json()["next_fire"] is not None
    assert [s["id"] for s in (await api.get("/v1/schedules", who="reader")).json()] == ["digest"]
    changed = await api.call("PATCH", "/v1/schedules/digest", {"cron": "30 8 * * *"})
    assert changed.status_code == 200 and changed.json()["cron"] == "30 8 * * *"
    assert (await api.post("/v1/schedules/digest/pause")).json()["state"] == "paused"
    assert (await api.post("/v1/schedules/digest/resume")).json()["state"] == "active"
    shown = (await api.get("/v1/schedules/digest")).json()
    assert shown["timezone"] == "America/New_York" and shown["payload"] == {"kind": "digest"}
    assert (await api.call("DELETE", "/v1/schedules/digest")).status_code == 200
    gone = await api.get("/v1/schedules/digest")
    assert gone.status_code == 404 and error_of(gone)["type"] == "ScheduleNotFoundError"


async def test_a_bad_cron_is_refused_naming_the_field(api: Api) -> None:
    r = await api.post("/v1/schedules", {"queue": "email", "cron": "every tuesday"})
    assert r.status_code == 422 and error_of(r)["field"] == "cron"
    assert (await api.get("/v1/schedules")).json() == []


async def test_schedules_need_the_write_permission(api: Api) -> None:
    r = await api.post("/v1/schedules", {"queue": "email", "every": 60}, who="reader")
    assert r.status_code == 403 and "schedules:write" in error_of(r)["reason"]


async def test_campaign_create_progress_and_cancel(api: Api) -> None:
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    made = await api.post("/v1/campaigns", {
        "id": "winter-sale", "queue": "email", "at": at,
        "recipients": [{"id": f"u{i}", "payload": {"user": i}} for i in range(5)]})
    assert made.status_code == 201, made.text
    assert made.json()["scheduled"] == 5 and made.json()["pending"] == 5
    listed = (await api.get("/v1/campaigns", who="reader")).json()
    assert [c["id"] for c in listed] == ["winter-sale"]
    assert (await api.get("/v1/campaigns/winter-sale")).json()["pending"] == 5
    cancelled = (await api.post("/v1/campaigns/winter-sale/cancel")).json()
    assert cancelled["cancelled"] == 5 and cancelled["pending"] == 0
    missing = await api.get("/v1/campaigns/nope")
    assert missing.status_code == 404 and error_of(missing)["type"] == "CampaignNotFoundError"


async def test_out_of_range_numbers_and_times_are_422s_not_500s(api: Api) -> None:
    """What the fuzzer found: each is refused naming its field."""
    cases = [("/v1/schedules", {"queue": "email", "every": 1e300}, "every"),
             ("/v1/schedules", {"queue": "email", "every": 60, "max_count": 10**30},
              "max_count"),
             ("/v1/schedules", {"queue": "email", "every": 60,
                                "start": "9999-12-31T23:59:59-10:00"}, "start"),
             ("/v1/campaigns", {"id": "c", "queue": "email", "local_time": "00:00",
                                "date": "0001-01-01", "recipients": [{"id": "r"}]}, "date")]
    for path, body, field in cases:
        r = await api.post(path, body)
        assert r.status_code == 422 and error_of(r)["field"] == field, (body, r.text)
    r = await api.call("PUT", "/v1/queues/email/weights", {"high": 10**30, "normal": 1, "low": 1})
    assert r.status_code == 422 and "1000" in error_of(r)["reason"]


async def test_campaign_pause_resume_update_delete(api: Api) -> None:
    at = datetime.now(UTC) + timedelta(days=1)
    made = await api.post("/v1/campaigns", {
        "id": "spring", "queue": "email", "at": at.isoformat(), "throttle_per_minute": 10,
        "recipients": [{"id": f"u{i}"} for i in range(6)]})
    assert made.status_code == 201, made.text
    refused = await api.post("/v1/campaigns/spring/pause", who="reader")
    assert refused.status_code == 403 and "campaigns:write" in error_of(refused)["reason"]
    paused = await api.post("/v1/campaigns/spring/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert (await api.get("/v1/campaigns/spring")).json()["paused"] is True
    resumed = (await api.post("/v1/campaigns/spring/resume")).json()
    assert (resumed["paused"], resumed["pending"]) == (False, 6)
    later = (at + timedelta(hours=1)).isoformat()
    changed = await api.call("PATCH", "/v1/campaigns/spring",
                             {"throttle_per_minute": 60, "at": later})
    assert changed.status_code == 200, changed.text
    bad = await api.call("PATCH", "/v1/campaigns/spring", {"priority": "high"})
    assert bad.status_code == 422 and error_of(bad)["field"] == "priority"
    bad = await api.call("PATCH", "/v1/campaigns/spring", {"throttle_per_minute": 0})
    assert bad.status_code == 422 and error_of(bad)["field"] == "throttle_per_minute"
    running = await api.call("DELETE", "/v1/campaigns/spring")
    assert running.status_code == 409 and error_of(running)["type"] == "CampaignConflictError"
    await api.post("/v1/campaigns/spring/cancel")
    assert (await api.call("DELETE", "/v1/campaigns/spring")).json()["deleted"] is True
    assert (await api.get("/v1/campaigns/spring")).status_code == 404
    done = {a.action for a in await api.app.extension(Audit).entries() if a.outcome == "done"}
    assert {"campaigns.pause", "campaigns.resume", "campaigns.update",
            "campaigns.delete"} <= done
