"""Rolling deploys: a worker of this version processes what the previous release wrote.

The envelope below was encoded by tidings 0.1.0 as released (commit 5f2fafb, before the
package restructure) and is written into a lane exactly as that release's publish script
wrote it (fields ``i`` and ``m``), so a change to the envelope or the key layout that old
producers cannot follow fails here.
"""

from __future__ import annotations

from typing import Any

from conftest import Recorder
from tidings import EventKind, Message, Priority, Tidings

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
