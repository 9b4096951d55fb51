"""Circuit breakers per key (app.flow.key_breaker): one downstream per key trips alone."""

from __future__ import annotations

from collections import Counter

from conftest import Recorder
from flow_helpers import FakeClock
from tidings import DeadLetter, EventKind, Message, Tidings
from tidings.flow import CircuitState


async def test_an_open_key_is_put_back_while_the_other_keys_flow(
        app: Tidings, recorder: Recorder) -> None:
    clock, calls = FakeClock(), Counter[str]()
    q = app.queue("relay", max_attempts=50, backoff_base=0.01, backoff_cap=0.02)
    guard = app.flow.key_breaker("relay", key=lambda m: m.payload.get("tenant"),
                                 failure_threshold=2, open_for=30, clock=clock).protect(q)
    assert app.flow.key_breaker("relay", key=lambda m: None) is guard  # one per name

    @q.handler(concurrency=1)
    async def send(msg: Message) -> None:
        tenant = msg.payload.get("tenant") or "none"
        calls[tenant] += 1
        if tenant == "down":
            raise ConnectionError("relay down")
        if tenant == "poison":
            raise DeadLetter("not a breaker failure")

    await q.publish({"tenant": "down"})
    async with app.worker():
        await recorder.wait_count(EventKind.BREAKER_OPENED, 1)
        await q.publish_many([{"tenant": "up"}, {"tenant": "poison"}, {"n": "no key"},
                              {"tenant": "up"}])
        await recorder.wait_for(lambda: recorder.counts[EventKind.ACKED] == 3 and
                                recorder.counts[EventKind.DEAD_LETTERED] == 1)
        await recorder.wait_count(EventKind.SNOOZED, 1)
    [opened] = recorder.of(EventKind.BREAKER_OPENED)
    assert opened.reason == "breaker relay:down: closed -> open"
    assert calls == {"down": 2, "up": 2, "poison": 1, "none": 1}  # no call while open
    states = await app.flow.breaker_states()
    assert states["relay:down"][0].state is CircuitState.OPEN
    assert "relay:poison" not in states or states["relay:poison"][0].failures == 0
    await guard.reset("down")
    assert (await guard._cb().state("relay:down")).state is CircuitState.CLOSED


async def test_a_key_breaker_closes_after_its_probe_succeeds(
        app: Tidings, recorder: Recorder) -> None:
    failing = {"left": 2}
    q = app.queue("relay", max_attempts=20, backoff_base=0.01, backoff_cap=0.02)
    app.flow.key_breaker("relay", key=lambda m: m.payload["tenant"], failure_threshold=2,
                         open_for=0.2).protect(q)

    @q.handler
    async def send(msg: Message) -> None:
        if failing["left"] > 0:
            failing["left"] -= 1
            raise ConnectionError("relay down")

    await q.publish({"tenant": "t1"})
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    reasons = [e.reason for e in recorder.events if e.kind in (
        EventKind.BREAKER_OPENED, EventKind.BREAKER_HALF_OPEN, EventKind.BREAKER_CLOSED)]
    assert reasons == ["breaker relay:t1: closed -> open",
                       "breaker relay:t1: open -> half_open",
                       "breaker relay:t1: half_open -> closed"]
