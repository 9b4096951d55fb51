"""Queue settings changed at run time reach every running worker process within a bound.

How each setting is read by a running worker, and so its bound:

* **pause** (``app.flow.pause``, ``tidings flow pause``): the ``paused`` field of the
  queue's config hash, read by every worker's fetch gate at most once a second
  (``PauseGuard.check_every``): no fetch starts more than 1 s after the pause.
* **retry policy** (``Queue.set_retry``) and **lane weights** (``Queue.set_weights``,
  ``tidings weights``): fields of the same hash, returned by every heartbeat, so applied
  within ``min(10 s, visibility_timeout / 3)``.
* **breakers**: their state lives in Redis and every call asks it, so an opened or reset
  breaker applies to the next call on every worker.
* **rate limits** (``app.flow.set_rate``, ``tidings ratelimit``): a hash beside the bucket
  that the acquire script reads, so a change applies to every worker's next acquire.

The tests run two ``tidings worker`` processes and wait out the stated bound (plus a
margin for a busy machine) before checking that both follow the change.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from typing import Any

import pytest

from conftest import tidings, with_app
from fault_helpers import QUEUE, Recording, WorkerProcs, consumer_of, is_settled, poll, text
from flow_helpers import workers as flow_workers
from tidings import Outgoing, Tidings, ValidationError
from tidings.flow import RateSetting
from tidings.security.audit import Audit

VT = 1.5  # heartbeat every 0.5 s: the config bound of the retry policy and the weights
PAUSE_BOUND = 1.0
MARGIN = 1.0


async def two_workers(app: Tidings, workers: WorkerProcs, concurrency: int = 4,
                      **knobs: object) -> None:
    q = app.get_queue(QUEUE)
    env = workers.env(app, vt=VT, concurrency=concurrency, max_attempts=5, **knobs)
    for proc in (workers.start(env), workers.start(env)):
        await consumer_of(q, proc, detail=workers.all_logs)


async def test_a_pause_stops_both_workers_within_a_second_and_a_resume_restarts_them(
        fault_app: Tidings, workers: WorkerProcs) -> None:
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    await two_workers(fault_app, workers)
    await fault_app.flow.pause(q)
    await asyncio.sleep(PAUSE_BOUND + MARGIN)  # the stated bound: then nothing is fetched
    ids = await q.publish_many({"i": i} for i in range(20))
    await asyncio.sleep(PAUSE_BOUND + MARGIN)
    assert await rec.started_count() == 0
    assert (await q.stats()).depth == 20
    await fault_app.flow.resume(q)

    async def all_done() -> bool:
        return await rec.done_count() == len(ids) and await is_settled(q)

    await poll(all_done, 20, "both workers to resume", workers.all_logs)


async def test_a_retry_policy_set_at_run_time_applies_on_both_workers(
        fault_app: Tidings, workers: WorkerProcs) -> None:
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    await two_workers(fault_app, workers)
    # The code says 5 attempts; from now on, one.
    policy = await q.set_retry(max_attempts=1)
    assert policy.max_attempts == 1
    await asyncio.sleep(VT / 3 + MARGIN)  # one heartbeat, the stated bound
    failing = await q.publish_many({"fail": True, "i": i} for i in range(8))

    async def dead_lettered() -> bool:
        return (await q.stats()).dead == len(failing)

    await poll(dead_lettered, 20, "every failing message to be dead-lettered at once",
               workers.all_logs)
    started = await rec.started()
    assert {started[m] for m in failing} == {1}  # one attempt each, on whichever worker
    assert {d.reason for d in await q.dlq.list()} == {"max_attempts"}
    assert len(await rec.done()) == 0

    # Back to the code's policy: a failure is retried again.
    assert (await q.set_retry()).max_attempts == 5
    await asyncio.sleep(VT / 3 + MARGIN)
    retried = (await q.stats()).counters.get("retried", 0)
    [again] = await q.publish_many([{"fail": True, "i": "again"}])

    async def was_retried() -> bool:
        return (await q.stats()).counters.get("retried", 0) > retried

    await poll(was_retried, 20, "the failure to be retried", workers.all_logs)
    assert (await q.stats()).dead == len(failing)
    assert again not in {d.message_id for d in await q.dlq.list()}


async def test_a_bad_retry_override_is_refused_naming_the_field(fault_app: Tidings) -> None:
    q = fault_app.get_queue(QUEUE)
    for policy, field in (({"max_attempts": 0}, "max_attempts"), ({"tries": 3}, "tries"),
                          ({"jitter": 2}, "jitter")):
        with pytest.raises(ValidationError) as caught:
            await q.set_retry(**policy)
        assert caught.value.field == field
    assert await fault_app.broker.client.hget(q.keys.config, "retry") is None


async def test_lane_weights_set_at_run_time_apply_on_both_workers(
        fault_app: Tidings, workers: WorkerProcs) -> None:
    q = fault_app.get_queue(QUEUE)
    rec = Recording(fault_app)
    await two_workers(fault_app, workers, concurrency=1, order=1, sleep=0.02)
    await fault_app.flow.pause(q)  # a backlog in two lanes first
    await q.set_weights(0, 0, 1)  # the code says 6, 3, 1: high first; now low only
    await asyncio.sleep(max(PAUSE_BOUND, VT / 3) + MARGIN)
    await q.publish_many([Outgoing({"tag": "high"}, priority="high") for _ in range(30)]
                         + [Outgoing({"tag": "low"}, priority="low") for _ in range(30)])
    await fault_app.flow.resume(q)

    async def twenty_done() -> bool:
        return await rec.done_count() >= 20

    await poll(twenty_done, 20, "twenty messages processed", workers.all_logs)
    order = [text(t) for t in await fault_app.broker.client.lrange(
        f"{fault_app.settings.key_prefix}:fault:order", 0, 19)]
    assert order == ["low"] * 20, order  # both workers took the low lane only
    await q.set_weights(6, 3, 1)

    async def all_done() -> bool:
        return await rec.done_count() == 60 and await is_settled(q)

    await poll(all_done, 20, "the rest processed", workers.all_logs)


def test_cli_retry_sets_and_resets_the_override(known_env: dict[str, str]) -> None:
    out = tidings(known_env, "retry", "email", "--max-attempts", "2", "--cap", "60")
    assert "max_attempts=2" in out.stdout and "cap=60s" in out.stdout

    async def stored(app: Tidings) -> Any:
        return await app.broker.client.hget(app.queue("email").keys.config, "retry")

    assert json.loads(with_app(known_env, stored)) == {"max_attempts": 2, "cap": 60.0}
    bad = tidings(known_env, "retry", "email", "--jitter", "2", code=2)
    assert "jitter" in bad.output and "Traceback" not in bad.output
    assert "as the code declares" in tidings(known_env, "retry", "email").stdout
    assert with_app(known_env, stored) is None


# -- rate limits -----------------------------------------------------------------------

FLOW_APP = "tests.apps.flow_app:app"
SLOW = 1 / 3600  # the code's rate: one token an hour, so a refusal waits far longer than...
SLOW_WAIT = 60.0  # ...this, while a refusal under the run-time rate (50/s) waits < 0.1 s


async def _limited(app: Tidings) -> list[float]:
    """The wait of each refusal the worker's rate-limit script returned, in order."""
    raw = await app.broker.client.lrange(f"{app.settings.key_prefix}:flowtest:limited", 0, -1)
    return [float(text(v)) for v in raw]


async def _started(app: Tidings) -> int:
    return int(await app.broker.client.llen(f"{app.settings.key_prefix}:flowtest:started"))


async def _server_time(app: Tidings) -> float:
    seconds, micros = await app.broker.client.time()
    return float(seconds) + micros / 1e6


async def test_a_rate_set_at_run_time_applies_to_a_running_worker_from_its_next_fetch(
        make_app: Any, redis_url: str) -> None:
    app = make_app()
    q = app.queue("flow")
    app.flow.rate_limit("flow-rate", "1/h", burst=1).protect(q)
    await app.connect()
    env = {"TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": app.settings.key_prefix,
           "FLOW_RATE": "1/h", "FLOW_BURST": "1", "FLOW_RECORD_LIMITED": "1"}
    slow_refusals = lambda waits: [w for w in waits if w > SLOW_WAIT]  # noqa: E731
    with flow_workers(FLOW_APP, env, 1):
        began = await _server_time(app)
        await q.publish_many([{"n": i} for i in range(10)])

        async def held_back() -> bool:  # the script refused under the code's rate
            return bool(slow_refusals(await _limited(app)))

        await poll(held_back, 30, "the worker to be held back by the code's rate")
        # Tokens the code's bucket had to give: its burst, plus what the elapsed server
        # time refilled at one an hour.
        available = 1 + int((await _server_time(app) - began) * SLOW)
        assert await _started(app) == available == 1

        setting = await app.flow.set_rate("flow-rate", 50, burst=5)  # from this process
        assert (setting.rate, setting.burst, setting.code_rate) == (50, 5, SLOW)
        changed = await _server_time(app)

        async def all_started() -> bool:
            return await _started(app) == 10

        await poll(all_started, 30, "the worker to follow the run-time rate")
        # At the code's rate the other nine would take nine hours; at the new one, the
        # bucket never grants more than its burst plus the refill since the change.
        admitted = await _started(app) - 1
        assert admitted <= 5 + (await _server_time(app) - changed) * 50

        before = len(slow_refusals(await _limited(app)))
        assert (await app.flow.reset_rate("flow-rate")).override is None
        await q.publish_many([{"n": i} for i in range(10, 15)])

        async def held_again() -> bool:
            return len(slow_refusals(await _limited(app))) > before

        await poll(held_again, 30, "the worker to be held back by the code's rate again")
        # The bucket kept its tokens, capped at the code's burst of one.
        assert await _started(app) - 10 <= 1
    assert await app.flow.rate_setting("flow-rate") == RateSetting("flow-rate", SLOW, 1)


async def test_a_bad_run_time_rate_is_refused_naming_the_field(make_app: Any) -> None:
    app = make_app()
    app.flow.rate_limit("flow-rate", "10/s").protect(app.queue("flow"))
    for rate, burst, field in ((0, None, "rate"), (math.inf, None, "rate"),
                               (math.nan, None, "rate"), ("ten/s", None, "rate"),
                               (10, 0, "burst")):
        with pytest.raises(ValidationError) as caught:
            await app.flow.set_rate("flow-rate", rate, burst)
        assert caught.value.field == field
    with pytest.raises(ValidationError) as unknown:
        await app.flow.set_rate("nope", 10)
    assert unknown.value.field == "name"
    assert (await app.flow.rate_setting("flow-rate")).override is None


def test_cli_ratelimit_shows_sets_and_resets_the_rate_audited(
        cli_env: dict[str, str]) -> None:
    sys.modules.pop("tests.apps.flow_app", None)  # it reads the test's prefix on import
    env = {**cli_env, "FLOW_RATE": "10/s"}
    try:
        run = lambda *args, code=0: tidings(env, "ratelimit", "flow-rate", *args,  # noqa: E731
                                            "--app", FLOW_APP, code=code)
        assert "rate=10/s burst=10 (as the code declares)" in run().stdout
        assert "rate=2.5/s burst=3 (code: 10/s burst=10)" in run("--rate", "2.5",
                                                                  "--burst", "3").stdout
        assert "rate=100/s burst=100 (code: 10/s" in run("--rate", "6000/min").stdout
        assert "rate=100/s burst=100" in run().stdout
        for bad, field in ((("--rate", "0"), "rate"), (("--rate", "inf"), "rate"),
                           (("--rate", "5", "--burst", "0"), "burst")):
            refused = run(*bad, code=2)
            assert field in refused.output and "Traceback" not in refused.output
        assert "(as the code declares)" in run("--reset").stdout
        missed = tidings(env, "ratelimit", "flow-rat", "--app", FLOW_APP, code=1).output
        assert "no queue rate limit 'flow-rat' (did you mean 'flow-rate'?)" in missed
    finally:
        sys.modules.pop("tests.apps.flow_app", None)

    async def entries(app: Tidings) -> list[Any]:
        return await app.extension(Audit).entries()

    log = [(e.action, e.target, e.permission, e.outcome) for e in with_app(cli_env, entries)]
    assert log == [("ratelimit.set", "flow-rate", "ratelimits:write:flow-rate", outcome)
                   for _ in range(3) for outcome in ("allowed", "done")]
