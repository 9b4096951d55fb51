"""HTTP publish: one message and a batch, with every option, against the embedded server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from api_helpers import Api, error_of, serve
from tidings import Tidings


@pytest.fixture
async def api(make_app: Callable[..., Tidings]) -> AsyncIterator[Api]:
    async with serve(make_app) as served:
        yield served


async def test_publish_one_message_returns_its_id_and_stores_every_option(api: Api) -> None:
    r = await api.post("/v1/queues/email/messages", {
        "payload": {"to": "a@b.c"}, "priority": "high", "idempotency_key": "order-1",
        "correlation_id": "corr-7", "headers": {"tenant": "acme"}, "ttl": 600,
        "max_attempts": 4})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["queue"] == "email" and body["duplicate"] is False
    info = await api.app.queues["email"].inspect(body["id"])
    assert info is not None and info.state == "queued" and info.lane == "high"
    assert info.message is not None and info.message.payload == {"to": "a@b.c"}
    assert info.message.headers == {"tenant": "acme", "correlation_id": "corr-7"}
    assert info.message.max_attempts == 4 and info.message.expires_at is not None


async def test_a_second_publish_with_the_same_idempotency_key_is_a_duplicate(api: Api) -> None:
    first = (await api.post("/v1/queues/email/messages",
                            {"payload": 1, "idempotency_key": "k"})).json()
    again = (await api.post("/v1/queues/email/messages",
                            {"payload": 2, "idempotency_key": "k"})).json()
    assert again == {"id": first["id"], "queue": "email", "duplicate": True}
    assert (await api.app.queues["email"].stats()).depth == 1


async def test_delay_and_send_at_with_a_zone_make_delayed_messages(api: Api) -> None:
    delayed = (await api.post("/v1/queues/email/messages",
                              {"payload": "d", "delay": 3600})).json()
    wall = (datetime.now(UTC) + timedelta(days=2)).replace(tzinfo=None, microsecond=0)
    zoned = (await api.post("/v1/queues/email/messages", {
        "payload": "z", "send_at": wall.isoformat(), "zone": "Asia/Tokyo"})).json()
    q = api.app.queues["email"]
    d, z = await q.inspect(delayed["id"]), await q.inspect(zoned["id"])
    assert d is not None and d.state == "delayed"
    assert z is not None and z.state == "delayed" and z.due_at is not None
    # 9 hours ahead of UTC, no DST: the wall time in Tokyo is 9 h before the same in UTC.
    assert z.due_at == wall.replace(tzinfo=UTC) - timedelta(hours=9)


async def test_a_naive_send_at_without_zone_is_refused_naming_the_field(api: Api) -> None:
    r = await api.post("/v1/queues/email/messages",
                       {"payload": 1, "send_at": "2030-01-01T09:00:00"})
    assert r.status_code == 422
    assert error_of(r)["field"] == "send_at"


async def test_batch_reports_each_messages_outcome_and_publishes_the_valid_ones(
        api: Api) -> None:
    r = await api.post("/v1/queues/sms/messages/batch", {"messages": [
        {"payload": {"n": 1}}, {"payload": {"n": 2}, "delay": -5},
        {"payload": {"n": 3}, "idempotency_key": "x"},
        {"payload": {"n": 4}, "idempotency_key": "x"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["published"], body["duplicates"], body["refused"]) == (2, 1, 1)
    statuses = [x["status"] for x in body["results"]]
    assert statuses == ["published", "refused", "published", "duplicate"]
    assert body["results"][1]["error"]["field"] == "messages[1].delay"
    assert body["results"][3]["id"] == body["results"][2]["id"]
    stats = await api.app.queues["sms"].stats()
    assert stats.depth == 2


async def test_batch_of_a_hundred_messages_lands_in_order(api: Api) -> None:
    r = await api.post("/v1/queues/sms/messages/batch",
                       {"messages": [{"payload": i} for i in range(100)]})
    ids = [x["id"] for x in r.json()["results"]]
    assert len(set(ids)) == 100 and (await api.app.queues["sms"].stats()).depth == 100


async def test_publish_to_an_unknown_queue_is_a_404_naming_the_queue(api: Api) -> None:
    r = await api.post("/v1/queues/nope/messages", {"payload": 1})
    assert r.status_code == 404
    assert error_of(r) == {"type": "UnknownQueueError", "field": "queue",
                           "reason": error_of(r)["reason"]}


async def test_a_full_queue_refuses_with_429_and_retry_after(
        make_app: Callable[..., Tidings]) -> None:
    async with serve(make_app) as api:
        api.app.queue("tiny", max_depth=1)
        await api.post("/v1/queues/tiny/messages", {"payload": 1})
        r = await api.post("/v1/queues/tiny/messages", {"payload": 2})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert error_of(r)["type"] == "QueueFullError"
