"""Rolling deploys: a worker of this version processes what the previous release wrote.

The compatibility contract these tests state, for workers of release N and N+1 running at
once on the same queues:

* **N+1 reads everything N stored**: lanes, the delayed set and its bodies, retries
  waiting there, dead letters, the id index, idempotency keys (a republish under the same
  key is still a duplicate after the upgrade) and the counters. The snapshot
  ``tests/compat/v0.1.0-5f2fafb.json`` is what tidings 0.1.0 as released (commit
  5f2fafb, before the package restructure) left in Redis, key by key, written by
  ``tests/compat/make_snapshot.py`` running that release's code.
* **N reads what N+1 publishes** as long as the envelope version ``v`` stays 1: a new
  release may add optional envelope fields, which older decoders ignore (tested below);
  it may not change the meaning of an existing one. An envelope of a newer version is
  dead-lettered by an older worker as ``unsupported_version``, never guessed at
  (tests/test_worker_robustness.py), so it can be replayed once the fleet is upgraded.
* Key names, the consumer group name and the stream entry fields (``i``, ``m``) do not
  change within a major version (``test_the_old_key_layout_is_the_one_the_scripts_use``).

The single envelope below was encoded by that release too and is written into a lane
exactly as its publish script wrote it (fields ``i`` and ``m``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgpack

from conftest import Recorder
from tidings import EventKind, Message, Priority, Tidings

SNAPSHOT = Path(__file__).parent / "compat" / "v0.1.0-5f2fafb.json"

OLD_ENVELOPE = bytes.fromhex(
    "8ba17601a26964ba30314a46335a38513657335737563154334b38593444324e3541a171a5656d61696c"
    "a17083a2746faf616e6e406578616d706c652e636f6da874656d706c617465a777656c636f6d65a16e93"
    "01cb4004000000000000c0a2707200a16101a163cf000001937ed97200a16882ae636f7272656c617469"
    "6f6e5f6964a86f726465722d3432ab7472616365706172656e74d93730302d3462663932663335373762"
    "3334646136613363653932396430653065343733362d303066303637616130626139303262372d3031a1"
    "6bb06f726465722d34323a77656c636f6d65a178cf000001b8dac5b400a26d6104"
)


def test_the_old_key_layout_is_the_one_the_scripts_use(app: Tidings) -> None:
    keys = app.queue("email").keys
    prefix = app.settings.key_prefix
    assert keys.script_keys == tuple(f"{prefix}:{{email}}:{s}" for s in (
        "high", "normal", "low", "delayed", "delayed-bodies", "dlq", "deliveries", "index",
        "stats", "wake", "consumers", "config"))
    assert keys.idempotency("k") == f"{prefix}:{{email}}:idem:k"


async def test_a_message_published_by_the_previous_release_is_processed(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email")
    got: list[Message] = []

    @q.handler
    async def handle(msg: Message) -> None:
        got.append(msg)

    await app.connect()
    client: Any = app.broker.client
    msg_id = "01JF3Z8Q6W3W7V1T3K8Y4D2N5A"
    sid = await client.xadd(q.keys.high, {"i": msg_id, "m": OLD_ENVELOPE})
    await client.hset(q.keys.index, msg_id, f"0:{sid.decode()}")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    [msg] = got
    assert (msg.id, msg.priority, msg.attempts, msg.max_attempts) == (
        msg_id, Priority.HIGH, 1, 4)
    assert msg.payload == {"to": "ann@example.com", "template": "welcome", "n": [1, 2.5, None]}
    assert msg.correlation_id == "order-42" and msg.idempotency_key == "order-42:welcome"
    assert msg.headers["traceparent"].startswith("00-4bf92f3577b34da6")
    assert await q.inspect(msg_id) is None  # acked and gone, index entry too


async def restore(app: Tidings, snapshot: dict[str, Any]) -> None:
    """Write the snapshot's keys under the app's prefix, as the old release left them."""
    await app.connect()
    client: Any = app.broker.client
    prefix = app.settings.key_prefix

    def raw(value: str) -> bytes:
        return base64.b64decode(value)

    for name, key in snapshot["keys"].items():
        full = f"{prefix}:{name}"
        if key["type"] == "stream":
            for sid, fields in key["entries"]:
                await client.xadd(full, {raw(f): raw(v) for f, v in fields.items()}, id=sid)
        elif key["type"] == "zset":
            await client.zadd(full, {raw(m): score for m, score in key["members"]})
        elif key["type"] == "set":
            await client.sadd(full, *[raw(m) for m in key["members"]])
        elif key["type"] == "hash":
            await client.hset(full, mapping={raw(f): raw(v) for f, v in key["fields"].items()})
        else:
            await client.set(full, raw(key["value"]), px=max(60_000, key["ttl_ms"]))


async def test_what_the_previous_release_stored_is_processed_by_this_one(
        app: Tidings, recorder: Recorder) -> None:
    snapshot = json.loads(SNAPSHOT.read_text())
    ids: dict[str, str] = snapshot["ids"]
    q = app.queue("email", max_attempts=3)
    got: dict[str, Message] = {}

    @q.handler
    async def handle(msg: Message) -> None:
        got[msg.payload["k"]] = msg

    await restore(app, snapshot)
    before = await q.stats()
    assert (before.depth, before.delayed, before.dead) == (3, 2, 1)
    # An operator tool of this version on an old delayed message: due now.
    await q.reschedule(ids["delayed"], delay=0)
    [dead] = await q.dlq.list()
    assert dead.message_id == ids["dead"]
    assert await q.dlq.replay([ids["dead"]]) == 1
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 6)
    assert set(got) == {"plain", "high", "idem", "delayed", "retry", "dead"}
    assert {k: m.id for k, m in got.items()} == {k: ids[k] for k in got}
    assert got["high"].priority is Priority.HIGH
    assert got["retry"].attempts == 1  # its first attempt failed in the old release
    assert got["dead"].attempts == 0  # replayed with fresh attempts
    assert got["idem"].idempotency_key == "order-7:welcome"
    # The old release's idempotency key still holds: a republish is a duplicate.
    assert await q.publish({"k": "idem"}, idempotency_key="order-7:welcome") == ids["idem"]
    after = await q.stats()
    assert (after.depth, after.in_flight, after.delayed, after.dead) == (0, 0, 0, 0)
    assert after.counters["published"] == 6  # the old counters carry on
    assert after.counters["retried"] == 1


async def test_an_envelope_with_a_field_this_version_does_not_know_is_processed(
        app: Tidings, recorder: Recorder) -> None:
    """What an older worker sees from a newer producer that added an optional field."""
    q = app.queue("email")
    got: list[Message] = []

    @q.handler
    async def handle(msg: Message) -> None:
        got.append(msg)

    await app.connect()
    doc = msgpack.unpackb(OLD_ENVELOPE)
    doc["zz"] = {"added": "by a later release"}
    msg_id = doc["id"]
    sid = await app.broker.client.xadd(q.keys.normal, {"i": msg_id, "m": msgpack.packb(doc)})
    await app.broker.client.hset(q.keys.index, msg_id, f"1:{sid.decode()}")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    assert [m.id for m in got] == [msg_id]
    assert got[0].payload["template"] == "welcome"
