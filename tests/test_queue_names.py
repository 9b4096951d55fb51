"""``Queue | str`` is resolved by one resolver (app.get_queue): unknown names are refused.

Each entry point that takes a queue or its name refuses a name that was never declared
(UnknownQueueError), instead of declaring it with default settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from tidings import Tidings, UnknownQueueError, ValidationError
from tidings.scheduling.campaigns import Campaigns, Recipient

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def test_get_queue_takes_a_name_or_a_queue_of_this_app(make_app: Callable[..., Tidings]) -> None:
    app, other = make_app(), make_app()
    email = app.queue("email")
    assert app.get_queue("email") is email and app.get_queue(email) is email
    with pytest.raises(UnknownQueueError) as unknown:
        app.get_queue("emial")
    assert unknown.value.field == "queue" and "emial" in unknown.value.reason
    with pytest.raises(ValidationError, match="another Tidings app"):
        app.get_queue(other.queue("email"))
    with pytest.raises(ValidationError) as wrong_type:
        app.get_queue(42)  # type: ignore[arg-type]
    assert wrong_type.value.field == "queue"


async def test_campaign_to_an_unknown_queue_is_refused_and_declares_nothing(app: Tidings) -> None:
    with pytest.raises(UnknownQueueError):
        await Campaigns.of(app).schedule("promo", "pusj", [Recipient("u1", {"i": 1})],
                                         local_time=time(9))
    assert "pusj" not in app.queues
    assert await Campaigns.of(app).list() == []


async def test_schedule_for_an_unknown_queue_is_refused_and_stores_nothing(app: Tidings) -> None:
    with pytest.raises(UnknownQueueError):
        await app.schedules.add("digest", queue="emial", every=60)
    assert "emial" not in app.queues and await app.schedules.list() == []
    email = app.queue("email")
    created = await app.schedules.add("digest", queue=email, every=60)  # a Queue works too
    assert created.queue == "email"
    with pytest.raises(UnknownQueueError):
        await app.schedules.update("digest", queue="smss")
    assert (await app.schedules.get("digest")).queue == "email"


async def test_ticker_of_an_app_without_the_queue_leaves_the_occurrence_to_one_with_it(
        make_app: Callable[..., Tidings]) -> None:
    declares, lacks = make_app(), make_app()
    declares.schedules.clock = lacks.schedules.clock = lambda: T0
    email = declares.queue("email")
    lacks.queue("sms")
    await declares.schedules.add("s", queue="email", every=3600, start=T0)
    assert await lacks.schedules.tick(T0 + timedelta(seconds=1)) == []
    assert "email" not in lacks.queues  # not declared behind the app's back
    assert (await email.stats()).depth == 0
    # Its claim lapses after the lease; a ticker whose app declares the queue fires it.
    [fired] = await declares.schedules.tick(T0 + timedelta(seconds=40))
    assert fired.occurrence == T0 and (await email.stats()).depth == 1


FLOW_ENTRY_POINTS: list[tuple[str, Callable[[Tidings], Any]]] = [
    ("fair", lambda app: app.flow.fair("nope")),
    ("pausable", lambda app: app.flow.pausable("nope", key=lambda m: "k")),
    ("pause", lambda app: app.flow.pause("nope")),
    ("resume", lambda app: app.flow.resume("nope")),
    ("pause_state", lambda app: app.flow.pause_state("nope")),
    ("rate_limit", lambda app: app.flow.rate_limit("r", "5/s").protect("nope")),
    ("key_rate_limit", lambda app: app.flow.key_rate_limit(
        "k", "5/s", key=lambda m: "k").protect("nope")),
    ("concurrency", lambda app: app.flow.concurrency("c", limit=2).protect("nope")),
    ("breaker", lambda app: app.flow.breaker("b").protect("nope")),
]


@pytest.mark.parametrize(("name", "call"), FLOW_ENTRY_POINTS, ids=[n for n, _ in FLOW_ENTRY_POINTS])
async def test_flow_control_refuses_an_unknown_queue(
        app: Tidings, name: str, call: Callable[[Tidings], Any]) -> None:
    with pytest.raises(UnknownQueueError):
        result = call(app)
        if isinstance(result, Awaitable):
            await result
    assert "nope" not in app.queues
