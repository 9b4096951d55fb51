"""Dead-letter operations: list, inspect, replay (filtered, rate-limited), purge."""

from __future__ import annotations

import asyncio
import time

from conftest import Recorder
from tidings import DeadLetter, EventKind, Message, Tidings
from tidings.queues.dead_letters import make_filter


async def _fill_dlq(app: Tidings, recorder: Recorder, count: int = 6) -> None:
    q = app.queue("sms", max_attempts=1)

    @q.handler
    async def handle(msg: Message) -> None:
        if msg.payload % 2:
            raise DeadLetter("opted out")
        raise TimeoutError("provider timeout")

    await q.publish_many(range(count))
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, count)


async def test_list_and_inspect_show_reason_error_and_attempts(app: Tidings,
                                                              recorder: Recorder) -> None:
    await _fill_dlq(app, recorder)
    q = app.get_queue("sms")
    items = await q.dlq.list()
    assert len(items) == 6 and await q.dlq.count() == 6
    timeouts = [i for i in items if i.error_type == "TimeoutError"]
    assert len(timeouts) == 3 and all(i.reason == "max_attempts" for i in timeouts)
    assert {i.reason for i in items if i.error_type != "TimeoutError"} == {"opted out"}
    one = await q.dlq.get(timeouts[0].message_id)
    assert one is not None and one.error["attempts"] == 1 and one.message is not None
    info = await q.inspect(timeouts[0].message_id)
    assert info is not None and info.state == "dead" and info.dead_letter is not None
    assert info.dead_letter["reason"] == "max_attempts"


async def test_replay_filtered_gives_fresh_attempts(app: Tidings, recorder: Recorder) -> None:
    await _fill_dlq(app, recorder)
    q = app.get_queue("sms")
    replayed = await q.dlq.replay(where=make_filter(error_type="TimeoutError"))
    assert replayed == 3
    assert await q.dlq.count() == 3
    stats = await q.stats()
    assert stats.depth == 3
    handled: list[tuple[object, int]] = []

    @q.handler
    async def handle_again(msg: Message) -> None:
        handled.append((msg.payload, msg.attempts))

    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 3)
    assert sorted(handled) == [(0, 0), (2, 0), (4, 0)]  # type: ignore[type-var]


async def test_replay_one_by_id_and_replay_is_rate_limited(app: Tidings,
                                                           recorder: Recorder) -> None:
    await _fill_dlq(app, recorder, count=12)
    q = app.get_queue("sms")
    first = (await q.dlq.list(limit=1))[0]
    assert await q.dlq.replay([first.message_id]) == 1
    assert await q.dlq.replay([first.message_id]) == 0  # already gone: not replayed twice
    started = time.monotonic()
    assert await q.dlq.replay(rate=20, batch=2) == 11
    assert time.monotonic() - started >= 0.4  # 11 messages at 20/s, first batch is free


async def test_purge_by_filter_and_all(app: Tidings, recorder: Recorder) -> None:
    await _fill_dlq(app, recorder)
    q = app.get_queue("sms")
    assert await q.dlq.purge(where=make_filter(reason="opted out")) == 3
    assert {i.reason for i in await q.dlq.list()} == {"max_attempts"}
    assert await q.dlq.purge() == 3
    assert await q.dlq.count() == 0
    assert await app.broker.client.hlen(q.keys[7]) == 0  # index entries cleaned too


async def test_concurrent_replays_move_each_message_once(app: Tidings,
                                                         recorder: Recorder) -> None:
    await _fill_dlq(app, recorder, count=40)
    q = app.get_queue("sms")
    counts = await asyncio.gather(*(q.dlq.replay() for _ in range(4)))
    assert sum(counts) == 40
    assert (await q.stats()).depth == 40
