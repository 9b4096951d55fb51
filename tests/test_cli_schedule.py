"""``tidings schedules`` and ``tidings campaigns`` against a real server (JSON is the contract)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import orjson

from conftest import tidings, with_app
from tidings import Tidings
from tidings.scheduling.campaigns import Campaigns, Recipient
from tidings.security.audit import Audit

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

    async def audited(app: Tidings) -> list[tuple[str, str]]:
        return [(e.action, e.outcome) for e in await app.extension(Audit).entries()]

    # each change is an authorised operation; the declined and the missing ones left none
    assert [entry for entry in with_app(env, audited) if entry[1] != "allowed"] == [
        ("schedules.pause", "done"), ("schedules.resume", "done"), ("schedules.delete", "done")]


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


def test_campaigns_pause_resume_update_delete(cli_env: dict[str, str]) -> None:
    env = cli_env
    at = datetime(NEXT_YEAR, 3, 3, 9, 0, tzinfo=UTC)

    async def setup(app: Tidings) -> Any:
        app.queue("push")
        recipients = [Recipient(f"u{i}", {"i": i}) for i in range(40)]
        return await Campaigns.of(app).schedule("sale", "push", recipients, at=at,
                                                throttle_per_minute=20)

    with_app(env, setup)
    assert invoke(env, "campaigns", "pause", "sale").strip() == "sale: paused; 40 messages held"
    assert orjson.loads(invoke(env, "campaigns", "show", "sale", "--json"))["paused"] is True
    assert "scheduled (paused)" in invoke({**env, "COLUMNS": "200"}, "campaigns", "list")
    assert "40 messages pending" in invoke(env, "campaigns", "resume", "sale")
    updated = orjson.loads(invoke(env, "campaigns", "update", "sale",
                                  "--throttle-per-minute", "40", "--json"))
    assert (updated["paused"], updated["pending"]) == (False, 40)
    out = tidings(env, "campaigns", "update", "sale", "--at", "tomorrow", code=1)
    assert "--at" in out.stderr and "Traceback" not in out.stderr
    out = tidings(env, "campaigns", "delete", "sale", "--yes", code=1)  # still running
    assert "cannot be deleted" in out.stderr and "Traceback" not in out.stderr
    invoke(env, "campaigns", "cancel", "sale", "--yes")
    assert invoke(env, "campaigns", "delete", "sale", "--yes").strip() == "sale: deleted"
    invoke(env, "campaigns", "show", "sale", code=1)
    invoke(env, "campaigns", "pause", "nope", code=1)
