"""The dashboard with the ledger on: a message's timeline, the search by correlation id,
and the actions in the ledger's hash-chained audit trail."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from conftest import Recorder
from dashboard_helpers import log_in, post, token
from tidings import EventKind, Message, Tidings
from tidings.dashboard import create_dashboard


async def test_trace_shows_the_ledger_timeline_and_actions_reach_the_audit_trail(
        make_ledger_app: Callable[..., Tidings]) -> None:
    recorder = Recorder()
    app = make_ledger_app(middleware=[recorder], ledger_payloads="full")
    app.ledger.install(relay=False)
    q = app.queue("dash-ledger", max_attempts=2, backoff_base=0.01, backoff_cap=0.01,
                  jitter=0)

    @q.handler
    async def handle(msg: Message) -> None:
        if msg.attempts == 0:
            raise RuntimeError("smtp timeout")

    async with app:
        message_id = await q.publish({"to": "a@b.c"}, correlation_id="order-dash-1")
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, 1)
        await app.ledger.flush()
        transport = httpx.ASGITransport(app=create_dashboard(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
            csrf = await log_in(client, await token(app, ["admin"], "ops-ledger"))
            by_id = (await client.get("/trace", params={"q": message_id})).text
            assert "Ledger:" in by_id and "smtp timeout" in by_id
            for kind in ("published", "delivered", "retried", "acked"):
                assert f"<strong>{kind}</strong>" in by_id
            by_correlation = (await client.get("/trace", params={
                "q": "order-dash-1", "by": "correlation"})).text
            assert message_id in by_correlation and "<strong>acked</strong>" in by_correlation
            await post(client, "/queues/dash-ledger/pause", csrf)
        trail = await app.ledger.audit.list(actor="ops-ledger", target="dash-ledger")
        assert [(r.action, r.params["outcome"]) for r in trail] == [("queue.pause", "done")]
