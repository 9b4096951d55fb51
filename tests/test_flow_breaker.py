"""Circuit breakers shared through Redis, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from flow_helpers import FakeClock
from tidings.core.errors import ValidationError
from tidings.flow import CircuitBreaker, CircuitState, Transition

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(client: Redis, prefix: str, clock: FakeClock) -> Any:
    def make(redis: Redis | None = None, **config: Any) -> CircuitBreaker:
        config.setdefault("open_for", 30.0)
        return CircuitBreaker(redis or client, prefix=prefix, clock=clock, **config)

    return make


async def _trip(breaker: CircuitBreaker, name: str, failures: int) -> None:
    for _ in range(failures - 1):
        assert await breaker.record(name, False) is None
    assert await breaker.record(name, False) == Transition(CLOSED, OPEN)


def test_invalid_config(client: Redis) -> None:
    with pytest.raises(ValidationError):
        CircuitBreaker(client, failure_threshold=None, failure_rate=None)
    with pytest.raises(ValidationError):
        CircuitBreaker(client, failure_threshold=0)
    with pytest.raises(ValidationError):
        CircuitBreaker(client, failure_rate=1.5)
    with pytest.raises(ValidationError):
        CircuitBreaker(client, open_for=0)
    with pytest.raises(ValidationError):
        CircuitBreaker(client, half_open_probes=0)


async def test_opens_after_threshold_failures(make: Any, clock: FakeClock) -> None:
    breaker = make(failure_threshold=3, window=60)
    assert await breaker.record("provider:x", True) is None
    assert await breaker.record("provider:x", False) is None
    assert await breaker.record("provider:x", False) is None
    decision = await breaker.allow("provider:x")
    assert (decision.allowed, decision.state, decision.transition) == (True, CLOSED, None)

    assert await breaker.record("provider:x", False) == Transition(CLOSED, OPEN)
    decision = await breaker.allow("provider:x")
    assert (decision.allowed, decision.state) == (False, OPEN)
    assert decision.retry_after == pytest.approx(30.0)
    clock.advance(10)
    assert (await breaker.allow("provider:x")).retry_after == pytest.approx(20.0)

    state = await breaker.state("provider:x")
    assert (state.state, state.failures, state.calls) == (OPEN, 3, 4)
    assert state.opened_at == pytest.approx(clock.now - 10)
    assert state.next_probe_at == pytest.approx(clock.now + 20)
    assert (await breaker.allow("provider:y")).allowed  # names are independent


async def test_failures_leave_the_rolling_window(make: Any, clock: FakeClock) -> None:
    breaker = make(failure_threshold=3, window=10, buckets=10)
    await breaker.record("d", False)
    await breaker.record("d", False)
    clock.advance(11)
    assert (await breaker.state("d")).failures == 0
    assert await breaker.record("d", False) is None
    assert await breaker.record("d", False) is None
    clock.advance(5)  # still within the window of the last two
    assert await breaker.record("d", False) == Transition(CLOSED, OPEN)


async def test_opens_on_failure_rate_once_min_calls(make: Any) -> None:
    breaker = make(failure_threshold=None, failure_rate=0.5, min_calls=10)
    for _ in range(6):
        assert await breaker.record("d", False) is None  # under min_calls: no verdict yet
    for _ in range(3):
        assert await breaker.record("d", True) is None
    # 10 calls, 6 failed: 60% >= 50%.
    assert await breaker.record("d", False) == Transition(CLOSED, OPEN)


async def test_failure_rate_below_limit_stays_closed(make: Any) -> None:
    breaker = make(failure_threshold=None, failure_rate=0.5, min_calls=10)
    for i in range(40):
        assert await breaker.record("d", i % 3 != 0) is None  # a third fail
    state = await breaker.state("d")
    assert (state.state, state.calls, state.failures) == (CLOSED, 40, 14)


async def test_open_turns_half_open_after_open_for(make: Any, clock: FakeClock) -> None:
    breaker = make(failure_threshold=1)
    await _trip(breaker, "d", 1)
    clock.advance(29.999)
    decision = await breaker.allow("d")
    assert (decision.allowed, decision.state, decision.transition) == (False, OPEN, None)
    assert decision.retry_after == pytest.approx(0.001)
    clock.advance(0.001)
    decision = await breaker.allow("d")
    assert (decision.allowed, decision.state) == (True, HALF_OPEN)
    assert decision.transition == Transition(OPEN, HALF_OPEN)
    assert (await breaker.state("d")).probes_in_flight == 1


async def test_one_probe_across_concurrent_callers(
    make: Any, client2: Redis, clock: FakeClock
) -> None:
    first = make(failure_threshold=1)
    second = make(client2, failure_threshold=1)
    await _trip(first, "d", 1)
    clock.advance(30)
    decisions = await asyncio.gather(
        *(breaker.allow("d") for _ in range(10) for breaker in (first, second))
    )
    assert sum(d.allowed for d in decisions) == 1
    assert [d.transition for d in decisions if d.transition] == [Transition(OPEN, HALF_OPEN)]
    assert {d.state for d in decisions} == {HALF_OPEN}
    denied = [d for d in decisions if not d.allowed]
    assert all(d.retry_after > 0 for d in denied)


async def test_probe_success_closes(make: Any, clock: FakeClock) -> None:
    breaker = make(failure_threshold=2)
    await _trip(breaker, "d", 2)
    clock.advance(30)
    assert (await breaker.allow("d")).allowed
    assert await breaker.record("d", True) == Transition(HALF_OPEN, CLOSED)
    state = await breaker.state("d")
    assert (state.state, state.failures, state.calls, state.opened_at) == (CLOSED, 0, 0, None)
    decision = await breaker.allow("d")
    assert (decision.allowed, decision.state, decision.transition) == (True, CLOSED, None)
    # A fresh window: the failures from before the outage do not count any more.
    assert await breaker.record("d", False) is None


async def test_probe_failure_reopens(make: Any, clock: FakeClock) -> None:
    breaker = make(failure_threshold=1)
    await _trip(breaker, "d", 1)
    clock.advance(31)
    assert (await breaker.allow("d")).allowed
    assert await breaker.record("d", False) == Transition(HALF_OPEN, OPEN)
    decision = await breaker.allow("d")
    assert (decision.allowed, decision.state) == (False, OPEN)
    assert decision.retry_after == pytest.approx(30.0)  # open_for counts from the reopening
    assert (await breaker.state("d")).opened_at == pytest.approx(clock.now)


async def test_several_probes_must_all_succeed(make: Any, clock: FakeClock) -> None:
    breaker = make(failure_threshold=1, half_open_probes=2)
    await _trip(breaker, "d", 1)
    clock.advance(30)
    assert [(await breaker.allow("d")).allowed for _ in range(3)] == [True, True, False]
    assert await breaker.record("d", True) is None
    assert (await breaker.allow("d")).allowed is False  # the slot is not handed out twice
    assert await breaker.record("d", True) == Transition(HALF_OPEN, CLOSED)


async def test_lost_probe_frees_its_slot_after_probe_timeout(make: Any, clock: FakeClock) -> None:
    breaker = make(failure_threshold=1, probe_timeout=10)
    await _trip(breaker, "d", 1)
    clock.advance(30)
    assert (await breaker.allow("d")).allowed  # this probe's worker dies
    clock.advance(9.5)
    decision = await breaker.allow("d")
    assert decision.allowed is False
    assert decision.retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    assert (await breaker.allow("d")).allowed


async def test_late_results_are_not_taken_for_probes(make: Any, clock: FakeClock) -> None:
    breaker = make(failure_threshold=1, half_open_probes=2)
    await _trip(breaker, "d", 1)
    assert await breaker.record("d", True) is None  # a call let through before opening
    assert (await breaker.state("d")).state is OPEN
    clock.advance(30)
    assert (await breaker.allow("d")).transition == Transition(OPEN, HALF_OPEN)
    assert await breaker.record("d", True) is None  # the probe: one of two
    # No probe in flight: a failure now is a straggler, not a verdict on the downstream.
    assert await breaker.record("d", False) is None
    assert (await breaker.state("d")).state is HALF_OPEN
    assert (await breaker.allow("d")).allowed
    assert await breaker.record("d", True) == Transition(HALF_OPEN, CLOSED)


async def test_state_is_shared_across_connections(
    make: Any, client2: Redis, clock: FakeClock
) -> None:
    here = make(failure_threshold=2)
    there = make(client2, failure_threshold=2)
    assert await here.record("d", False) is None
    assert await there.record("d", False) == Transition(CLOSED, OPEN)  # counts add up
    assert (await here.allow("d")).allowed is False
    assert (await here.state("d")).state is OPEN
    clock.advance(30)
    assert (await there.allow("d")).transition == Transition(OPEN, HALF_OPEN)
    assert await here.record("d", True) == Transition(HALF_OPEN, CLOSED)
    assert (await there.state("d")).state is CLOSED


async def test_reset_and_list_states(make: Any, client: Redis) -> None:
    breaker = make(failure_threshold=1)
    await _trip(breaker, "sms:twilio", 1)
    await breaker.record("sms:vonage", True)
    await breaker.record("email:ses", True)
    await breaker.record("sms*[x]", True)  # glob characters in names are literal

    states = await breaker.list_states("sms:")
    assert sorted(states) == ["sms:twilio", "sms:vonage"]
    assert states["sms:twilio"].state is OPEN
    assert states["sms:vonage"].calls == 1
    assert sorted(await breaker.list_states()) == [
        "email:ses",
        "sms*[x]",
        "sms:twilio",
        "sms:vonage",
    ]
    assert sorted(await breaker.list_states("sms*")) == ["sms*[x]"]

    assert await breaker.reset("sms:twilio") == Transition(OPEN, CLOSED)
    assert await breaker.reset("sms:twilio") is None
    assert (await breaker.allow("sms:twilio")).allowed
    assert await client.exists(breaker.key("sms:twilio")) == 0


async def test_closed_breakers_expire_open_ones_do_not(make: Any, client: Redis) -> None:
    breaker = make(failure_threshold=2, window=10)
    await breaker.record("d", False)
    assert breaker.key("d").endswith("{d}")  # one hash slot per breaker
    assert 9_000 < await client.pttl(breaker.key("d")) <= 10_000
    await breaker.record("d", False)
    assert await client.pttl(breaker.key("d")) == -1
