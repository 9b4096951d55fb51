"""``tidings schedules`` and ``tidings campaigns`` against a real server (JSON is the contract)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import orjson

from conftest import tidings, with_app
from tidings import Tidings
from tidings.scheduling.campaigns import Campaigns, Recipient

NEXT_YEAR = datetime.now(UTC).year + 1


def invoke(env: dict[str, str], *args: str, code: int = 0) -> str:
    return str(tidings(env, *args, code=code).stdout)


def test_schedules_list_show_pause_resume_delete(cli_env: dict[str, str]) -> None:
    env = cli_env

    async def setup(app: Tidings) -> None:
        app.queue("email")
        app.queue("sms")
        await app.schedules.add("digest", queue="email", cron="0 9 * * *",
                                timezone="Europe/Paris", payload={"t": "digest"})
        await app.schedules.add("beat", queue="sms", every=60)

    with_app(env, setup)
    listed = orjson.loads(invoke(env, "schedules", "list", "--json"))
    assert [s["id"] for s in listed] == ["beat", "digest"]  # soonest next fire first
    assert listed[1]["cron"] == "0 9 * * *" and listed[1]["state"] == "active"
    assert datetime.fromisoformat(listed[1]["next_fire"]) > datetime.now(UTC)
    table = invoke({**env, "COLUMNS": "200"}, "schedules", "list")
    assert "digest" in table and "Europe/Paris" in table and "every 1m" in table
    shown = orjson.loads(invoke(env, "schedules", "show", "digest", "--json"))
    assert shown["payload"] == {"t": "digest"} and shown["timezone"] == "Europe/Paris"
    assert "next_fire" in invoke(env, "schedules", "show", "digest")

    assert invoke(env, "schedules", "pause", "digest").strip() == "digest: paused"
    shown = orjson.loads(invoke(env, "schedules", "show", "digest", "--json"))
    assert shown["state"] == "paused" and shown["next_fire"] is None
    assert "next fire" in invoke(env, "schedules", "resume", "digest")
    shown = orjson.loads(invoke(env, "schedules", "show", "digest", "--json"))
    assert shown["state"] == "active"

    tidings(env, "schedules", "delete", "digest", input="n\n", code=1)  # declined
    assert invoke(env, "schedules", "delete", "digest", "--yes").strip() == "digest: deleted"
    invoke(env, "schedules", "delete", "digest", "--yes", code=1)
    invoke(env, "schedules", "show", "digest", code=1)  # not found: exit 1
    assert [s["id"] for s in orjson.loads(invoke(env, "schedules", "list", "--json"))] == [
        "beat"]


def test_campaigns_list_show_cancel(cli_env: dict[str, str]) -> None:
    env = cli_env

    async def setup(app: Tidings) -> Any:
        recipients = [Recipient(f"u{i}", {"i": i}, "Asia/Tokyo") for i in range(300)]
        app.queue("push")
        return await Campaigns.of(app).schedule(
            "promo", "push", recipients, local_time=time(9), date=date(NEXT_YEAR, 2, 2))

    with_app(env, setup)
    listed = orjson.loads(invoke(env, "campaigns", "list", "--json"))
    assert [(c["id"], c["status"], c["scheduled"], c["pending"]) for c in listed] == [
        ("promo", "scheduled", 300, 300)]
    assert "promo" in invoke(env, "campaigns", "list")
    shown = orjson.loads(invoke(env, "campaigns", "show", "promo", "--json"))
    assert shown["queue"] == "push" and shown["done"] is False
    out = invoke(env, "campaigns", "cancel", "promo", "--yes")
    assert out.strip() == "promo: cancelled 300; 0 had been released already"
    shown = orjson.loads(invoke(env, "campaigns", "show", "promo", "--json"))
    assert (shown["status"], shown["cancelled"], shown["pending"]) == ("cancelled", 300, 0)
    assert "cancelled" in invoke(env, "campaigns", "show", "promo")
    invoke(env, "campaigns", "show", "nope", code=1)
