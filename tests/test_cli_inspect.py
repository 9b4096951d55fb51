"""``tidings inspect`` and ``tidings dlq``: one view of a message, whatever was stored."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from conftest import Recorder, held_by_dead_consumer, tidings
from stored_entries import add_dead_letter, add_to_lane, dead_fields
from test_cli import _park
from tidings import EventKind, Message, Tidings


def env_of(app: Tidings, redis_url: str) -> dict[str, str]:
    return {"TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": app.settings.key_prefix}


async def cli(env: dict[str, str], *args: str, **options: Any) -> Any:
    """The CLI from an async test (it runs its own event loop, so in a thread)."""
    return await asyncio.to_thread(tidings, env, *args, **options)


async def test_inspect_and_dlq_list_show_the_same_attempts_deliveries_and_error(
        app: Tidings, recorder: Recorder, redis_url: str) -> None:
    sms = app.queue("sms", max_attempts=2, backoff_base=0.01, backoff_cap=0.02)

    @sms.handler
    async def send(msg: Message) -> None:
        raise ValueError("bad number")

    msg_id = await sms.publish({"to": "+1"})
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    env = env_of(app, redis_url)
    inspected = orjson.loads((await cli(env, "inspect", msg_id, "--json")).stdout)
    [listed] = orjson.loads((await cli(env, "dlq", "list", "sms", "--json")).stdout)
    for view in (inspected, listed):
        assert (view["state"], view["attempts"], view["deliveries"]) == ("dead", 2, 1)
        assert view["error"]["type"] == "ValueError"  # an object, not JSON text
        assert view["error"]["message"] == "bad number"
    assert inspected == listed
    text = (await cli(env, "inspect", msg_id)).stdout
    assert "error: ValueError: bad number" in text and "Traceback" in text


async def test_a_poison_message_records_how_often_it_was_delivered(
        app: Tidings, recorder: Recorder, redis_url: str) -> None:
    sms = app.queue("sms", max_deliveries=2, visibility_timeout=0.3)
    await held_by_dead_consumer(sms, 1)  # a consumer read it and died ...
    client: Any = app.broker.client
    [(entry_id, _)] = await client.xrange(sms.keys.normal)
    await client.hset(sms.keys.deliveries, f"1{entry_id.decode()}", 2)  # ... as had one before it
    sms.handler(lambda msg: None)
    async with app.worker():
        await recorder.wait_count(EventKind.DEAD_LETTERED, 1)
    [view] = orjson.loads((await cli(env_of(app, redis_url), "dlq", "list", "sms",
                                     "--json")).stdout)
    assert view["reason"] == "poison" and view["deliveries"] == 2
    assert "delivered 2 times" in view["error"]["message"]


async def test_unreadable_entries_show_their_raw_fields_and_why(app: Tidings,
                                                                redis_url: str) -> None:
    sms = app.queue("sms")
    await app.connect()
    await add_dead_letter(sms, dead_fields("dead-garbage", m=b"\x93not msgpack"))
    await add_to_lane(sms, {"i": "lane-garbage", "m": b"\xc1"})
    env = env_of(app, redis_url)
    [listed] = orjson.loads((await cli(env, "dlq", "list", "sms", "--json")).stdout)
    assert listed["id"] == "dead-garbage" and listed["decode_error"]
    assert listed["fields"]["reason"] == "max_attempts" and "m" in listed["fields"]
    table = (await cli(env, "dlq", "list", "sms", COLUMNS="100")).stdout
    assert "dead-garbage" in table
    for msg_id, state in (("dead-garbage", "dead"), ("lane-garbage", "queued")):
        shown = orjson.loads((await cli(env, "inspect", msg_id, "--json")).stdout)
        assert shown["state"] == state and shown["decode_error"] and shown["fields"]["m"]
        text = (await cli(env, "inspect", msg_id)).stdout
        assert "decode_error:" in text and "fields:" in text


async def test_dlq_replay_reports_what_it_skipped(app: Tidings, redis_url: str) -> None:
    sms = app.queue("sms")
    await app.connect()
    [good] = await _park(app, 1)
    await add_dead_letter(sms, dead_fields("garbage", m=b"\x93not msgpack"))
    env = env_of(app, redis_url)
    result = await cli(env, "dlq", "replay", "sms", "--all")
    assert result.stdout.strip() == "replayed 1 (1 skipped)"
    assert "skipped garbage: cannot be replayed" in result.stderr
    again = orjson.loads((await cli(env, "dlq", "replay", "sms", "--all", "--json",
                                    code=1)).stdout)
    assert again["replayed"] == 0 and [s["message_id"] for s in again["skipped"]] == [
        "garbage"]
    assert (await sms.inspect(good)) is not None


async def test_dlq_replay_and_purge_report_progress(app: Tidings) -> None:
    sms = app.queue("sms")
    await app.connect()
    await _park(app, 250)
    replayed: list[tuple[int, int | None]] = []
    await sms.dlq.replay(progress=lambda done, total: replayed.append((done, total)))
    assert replayed == [(100, 250), (200, 250), (250, 250)]
    filtered: list[tuple[int, int | None]] = []
    await sms.dlq.replay(where=lambda e: True, progress=lambda d, t: filtered.append((d, t)))
    assert filtered == [(0, None)]  # nothing left, and a filter does not know its total
    await _park(app, 3)
    purged: list[tuple[int, int | None]] = []
    assert await sms.dlq.purge(progress=lambda d, t: purged.append((d, t))) == 3
    assert purged == [(3, 3)]
