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

The tests run two ``tidings worker`` processes and wait out the stated bound (plus a
margin for a busy machine) before checking that both follow the change.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from conftest import tidings, with_app
from fault_helpers import QUEUE, Recording, WorkerProcs, consumer_of, is_settled, poll, text
from tidings import Outgoing, Tidings, ValidationError

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
