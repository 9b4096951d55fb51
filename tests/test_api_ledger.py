"""With the ledger on: a message's history over HTTP, and changes in the hash-chained trail."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from api_helpers import make_tokens
from conftest import Recorder
from tidings import EventKind, Message, Tidings
from tidings.api import create_api


async def test_message_history_comes_from_the_ledger_and_changes_reach_its_trail(
        make_ledger_app: Callable[..., Tidings]) -> None:
    recorder = Recorder()
    app = make_ledger_app(middleware=[recorder])
    app.ledger.install(relay=False)
    q = app.queue("ledger-api")

    @q.handler
    async def handle(msg: Message) -> None:
        return None

    async with app:
        tokens = await make_tokens(app)
        auth = {"Authorization": f"Bearer {tokens['admin']}"}
        transport = httpx.ASGITransport(app=create_api(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://api",
                                     headers=auth) as http:
            made = await http.post("/v1/queues/ledger-api/messages", json={"payload": 1})
            msg_id = made.json()["id"]
            async with app.worker(["ledger-api"]):
                await recorder.wait_count(EventKind.ACKED, 1)
            await app.ledger.flush()
            paused = await http.post("/v1/queues/ledger-api/pause")
            assert paused.status_code == 200, paused.text
            shown = await http.get(f"/v1/messages/{msg_id}")
        trail = await app.ledger.audit.list(action="queue.pause", target="ledger-api")
    history = shown.json()["history"]
    assert shown.status_code == 200, shown.text
    assert len(history) == 1 and history[0]["message_id"] == msg_id
    assert history[0]["state"] == "acked"
    assert [(r.actor, r.params["outcome"]) for r in trail] == [("ops-admin", "done")]
