"""The dashboard's campaign pause and resume buttons over ASGI (httpx, no browser)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dashboard_helpers import csrf_of, log_in, post, token
from test_dashboard import Client, admin, client_of, outcomes  # noqa: F401 - the fixture
from tidings import Tidings
from tidings.scheduling.campaigns import Campaigns, Recipient


async def running(app: Tidings) -> Campaigns:
    app.queue("push")
    campaigns = Campaigns.of(app)
    await campaigns.schedule("promo", "push", [Recipient(f"u{i}", i) for i in range(8)],
                             at=datetime.now(UTC) + timedelta(days=1))
    return campaigns


async def test_pause_and_resume_buttons_hold_and_release_a_campaign(
        app: Tidings, client_of: Client) -> None:  # noqa: F811
    campaigns = await running(app)
    client, csrf = await admin(app, client_of)
    page = (await client.get("/schedules")).text
    assert "/campaigns/promo/pause" in page and "/campaigns/promo/resume" not in page
    assert (await post(client, "/campaigns/promo/pause", csrf)).status_code == 303
    assert (await campaigns.progress("promo")).paused
    page = (await client.get("/schedules")).text
    assert "/campaigns/promo/resume" in page and ">paused<" in page
    await post(client, "/campaigns/promo/resume", csrf)
    shown = await campaigns.progress("promo")
    assert (shown.paused, shown.pending) == (False, 8)
    assert await outcomes(app, "campaigns.pause") == ["allowed", "done"]
    assert await outcomes(app, "campaigns.resume") == ["allowed", "done"]
    assert (await post(client, "/campaigns/promo/bogus", csrf)).status_code == 404


async def test_campaign_buttons_need_csrf_and_are_hidden_from_read_only(
        app: Tidings, client_of: Client) -> None:  # noqa: F811
    campaigns = await running(app)
    client, _ = await admin(app, client_of)
    for csrf in ("", "forged"):
        reply = await post(client, "/campaigns/promo/pause", csrf)
        assert reply.status_code == 403 and "CSRF" in reply.text
    viewer = client_of()
    csrf = await log_in(viewer, await token(app, ["campaigns:read", "schedules:read"],
                                            "viewer"))
    page = (await viewer.get("/schedules")).text
    assert "promo" in page and "/campaigns/promo/pause" not in page
    refused = await post(viewer, "/campaigns/promo/pause", csrf_of(page) or csrf)
    assert refused.status_code == 403 and "needs the permission" in refused.text
    assert not (await campaigns.progress("promo")).paused
    assert await outcomes(app, "campaigns.pause") == ["denied"]
