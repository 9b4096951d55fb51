"""Inspect and the DLQ tools on malformed stored entries: they show or skip and report,
never stop. Every bad entry here is written by hand, as another tool or a bug might."""

from __future__ import annotations

import math
from typing import Any

import pytest

from conftest import Recorder
from stored_entries import (
    add_dead_letter,
    add_delayed,
    add_to_lane,
    dead_fields,
    envelope,
)
from tidings import DeadLetter, EventKind, Message, Queue, Tidings, ValidationError
from tidings.core.message import new_message_id, now_ms
from tidings.queues.dead_letters import DeadLetterCount


@pytest.fixture
async def sms(app: Tidings) -> Queue:
    q = app.queue("sms", max_attempts=1)
    await app.connect()
    return q


async def park(q: Queue, recorder: Recorder, count: int) -> None:
    """Dead-letter ``count`` well-formed messages (payloads 0..count-1) the normal way."""
    @q.handler
    async def handle(msg: Message) -> None:
        raise DeadLetter("opted out")

    await q.publish_many(range(count))
    async with q.app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, count)


# -- inspect -------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [b"\xc1 garbage", b"", b"\x93\x01\x02\x03", None])
async def test_inspect_shows_a_dead_letter_whose_envelope_does_not_decode(
        sms: Queue, m: bytes | None) -> None:
    msg_id = new_message_id()
    await add_dead_letter(sms, dead_fields(msg_id, m, reason="undecodable"))
    info = await sms.inspect(msg_id)
    assert info is not None and info.state == "dead" and info.message is None
    assert info.dead_letter is not None and info.dead_letter["reason"] == "undecodable"
    assert info.fields["i"] == msg_id and info.fields["reason"] == "undecodable"
    assert info.decode_error  # why it could not be read
    if m is None:
        assert "no 'm' field" in info.decode_error


@pytest.mark.parametrize("index", ["x:not-an-entry-id", "1:garbage", "7:1-1", "1:", "zzz",
                                   "", "x:", "2:99999999999999999999999-1"])
async def test_inspect_with_an_index_value_that_is_not_a_location(
        sms: Queue, index: str) -> None:
    msg_id = new_message_id()
    await sms.app.broker.client.hset(sms.keys[7], msg_id, index)
    info = await sms.inspect(msg_id)
    assert info is not None and info.state == "unknown" and info.message is None
    assert info.fields == {"index": index} and repr(index) in str(info.decode_error)


@pytest.mark.parametrize(("body", "lane", "decodes"), [
    (b"no separators at all", None, False),
    (b"1|", None, False),
    (b"1||\xc1garbage", "normal", False),
    (b"9||<valid>", None, True),
    (b"x|soon|<valid>", None, True),
])
async def test_inspect_of_a_malformed_delayed_body(
        sms: Queue, body: bytes, lane: str | None, decodes: bool) -> None:
    msg_id = new_message_id()
    body = body.replace(b"<valid>", envelope(sms))
    await add_delayed(sms, msg_id, body, now_ms() + 3_600_000)
    info = await sms.inspect(msg_id)
    assert info is not None and info.state == "delayed" and info.lane == lane
    assert (info.message is not None) == decodes and (info.decode_error is None) == decodes
    assert info.due_at is not None and info.fields


async def test_inspect_of_a_delayed_message_due_at_an_impossible_time(sms: Queue) -> None:
    msg_id = new_message_id()
    await add_delayed(sms, msg_id, b"1||" + envelope(sms), math.inf)
    info = await sms.inspect(msg_id)
    assert info is not None and info.state == "delayed" and info.due_at is None


@pytest.mark.parametrize("fields", [
    {"m": b"\xc1"},                       # garbage
    {},                                    # no envelope at all
    {"m": b"\x81\xa1v\x01"},               # a map without id and queue
])
async def test_inspect_of_a_queued_entry_that_does_not_decode(
        sms: Queue, fields: dict[str, Any]) -> None:
    msg_id = new_message_id()
    await add_to_lane(sms, {"i": msg_id, **fields})
    info = await sms.inspect(msg_id)
    assert info is not None and info.state == "queued" and info.message is None
    assert info.fields["i"] == msg_id and info.decode_error and info.lane == "normal"


@pytest.mark.parametrize("changes", [{"c": ""}, {"c": math.nan}, {"c": math.inf},
                                     {"h": 1}, {"id": None}, {"a": ""}, {"v": 99}, {"pr": 7},
                                     {"q": ...}, {"x": "soon"}])
async def test_inspect_returns_or_reports_an_envelope_with_a_bad_field(
        sms: Queue, changes: dict[str, Any]) -> None:
    msg_id = new_message_id()
    await add_to_lane(sms, {"i": msg_id, "m": envelope(sms, **changes)})
    info = await sms.inspect(msg_id)
    assert info is not None and info.state == "queued"
    assert info.message is not None or info.decode_error  # decoded, or why not


# -- the dead-letter tools -----------------------------------------------------------------


async def test_malformed_lane_and_dead_at_do_not_break_list_replay_or_purge(
        sms: Queue, recorder: Recorder) -> None:
    await park(sms, recorder, 3)
    odd = {
        await add_dead_letter(sms, dead_fields(new_message_id(), envelope(sms, "lane"),
                                               lane="abc")): "lane",
        await add_dead_letter(sms, dead_fields(new_message_id(), envelope(sms, "when"),
                                               dead_at="soon")): "dead_at",
        await add_dead_letter(sms, dead_fields(new_message_id(), envelope(sms, "far"),
                                               dead_at="9" * 30)): "dead_at",
        await add_dead_letter(sms, dead_fields(new_message_id(), envelope(sms, "bare"),
                                               lane=..., dead_at=...)): "",
    }
    listed = await sms.dlq.list()
    assert len(listed) == 7
    for item in listed:
        if odd.get(item.entry_id):
            assert any(odd[item.entry_id] in p for p in item.problems), item.problems
            assert item.fields["i"] == item.message_id and item.as_dict()["problems"]
    replayed = await sms.dlq.replay()
    assert replayed == 7 and replayed.skipped == ()  # all decodable: all replayed
    assert (await sms.stats()).depth == 7 and await sms.dlq.count() == 0


async def test_replay_all_skips_and_reports_what_it_cannot_replay(
        sms: Queue, recorder: Recorder) -> None:
    await park(sms, recorder, 4)
    bad = {
        await add_dead_letter(sms, dead_fields(new_message_id(), b"\xc1\xc1")),
        await add_dead_letter(sms, dead_fields(new_message_id())),  # no m field
        await add_dead_letter(sms, dead_fields(new_message_id(), envelope(sms, id=None))),
        await add_dead_letter(sms, dead_fields(new_message_id(), envelope(sms, id={}))),
        await add_dead_letter(sms, dead_fields(new_message_id(), envelope(sms, id=[1]))),
    }
    replayed = await sms.dlq.replay()
    assert isinstance(replayed, int) and isinstance(replayed, DeadLetterCount)
    assert replayed == 4 and f"replayed {replayed}" == "replayed 4"  # what callers print
    assert set(replayed.skipped_ids) == bad
    assert all(s.reason.startswith("cannot be replayed") for s in replayed.skipped)
    assert await sms.dlq.count() == len(bad)  # the skipped stay, to be purged
    assert (await sms.stats()).depth == 4


async def test_purge_deletes_entries_that_do_not_decode(sms: Queue, recorder: Recorder) -> None:
    await park(sms, recorder, 2)
    garbage_id = new_message_id()
    await add_dead_letter(sms, dead_fields(garbage_id, b"\xc1", lane="?", dead_at="?"))
    await add_dead_letter(sms, {"reason": "undecodable"})  # not even an id
    assert await sms.dlq.purge([garbage_id]) == 1
    assert await sms.app.broker.client.hget(sms.keys[7], garbage_id) is None
    purged = await sms.dlq.purge()
    assert purged == 3 and purged.skipped == () and await sms.dlq.count() == 0


async def test_get_with_an_index_value_that_is_not_an_entry_id(sms: Queue) -> None:
    msg_id = new_message_id()
    await add_dead_letter(sms, dead_fields(msg_id, b"\xc1"), index=False)
    await sms.app.broker.client.hset(sms.keys[7], msg_id, "x:not-an-id")
    found = await sms.dlq.get(msg_id)  # found by the scan instead
    assert found is not None and found.message_id == msg_id and found.message is None
    assert await sms.dlq.get(new_message_id()) is None


@pytest.mark.parametrize("rate", [math.nan, math.inf, -math.inf, -1, 0, "5", True])
async def test_replay_rate_must_be_a_finite_positive_number(sms: Queue, rate: Any) -> None:
    with pytest.raises(ValidationError) as info:
        await sms.dlq.replay(rate=rate)
    assert info.value.field == "rate"


@pytest.mark.parametrize("batch", [0, -3, 1.5, True])
async def test_replay_batch_must_be_a_positive_integer(sms: Queue, batch: Any) -> None:
    with pytest.raises(ValidationError) as info:
        await sms.dlq.replay(batch=batch)
    assert info.value.field == "batch"
