"""Queue names in the CLI: typos are refused without a trace, queues can be deleted."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from conftest import tidings, with_app
from tidings import Tidings
from tidings.core.errors import QueueNotEmptyError, UnknownQueueError
from tidings.ordering.queue import OrderedQueue

MSG = "01JDX9V6Z3K5Q8W2E4R6T8Y0U1"
COMMANDS = [
    ["publish", "emial", "{}"],
    ["pause", "emial"], ["resume", "emial"], ["paused", "emial"],
    ["dlq", "list", "emial"], ["dlq", "replay", "emial", "--all"],
    ["dlq", "purge", "emial", "--all", "--yes"],
    ["delayed", "cancel", "emial", MSG], ["delayed", "reschedule", "emial", MSG, "--delay", "5"],
    ["weights", "emial", "1", "1", "1"], ["inspect", MSG, "--queue", "emial"],
    ["queue", "delete", "emial", "--yes"],
]


@pytest.fixture
def env(known_env: dict[str, str]) -> dict[str, str]:
    return known_env


async def _keys(app: Tidings) -> set[bytes]:
    return {k async for k in app.broker.client.scan_iter(match=f"{app.settings.key_prefix}:*")}


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_an_unknown_queue_is_refused_with_a_suggestion_and_leaves_no_trace(
        env: dict[str, str], args: list[str]) -> None:
    before = with_app(env, _keys)
    result = tidings(env, *args, code=1)
    line = result.stderr.strip()
    assert "unknown queue 'emial' (did you mean 'email'?)" in line and "\n" not in line
    assert "email, sms" in line  # the known queues
    assert with_app(env, _keys) == before  # no key written, not even the registry's
    names = [q["name"] for q in orjson.loads(tidings(env, "queues", "--json").stdout)]
    assert names == ["email", "sms"]


def test_an_ordered_queue_name_is_pointed_to_the_ordered_commands(env: dict[str, str]) -> None:
    async def declare(app: Tidings) -> None:
        await OrderedQueue(app, "ledger", partitions=2).ensure_ready()

    with_app(env, declare)
    result = tidings(env, "dlq", "list", "ledger", code=2)
    assert "'ledger' is an ordered queue" in result.stderr
    assert "did you mean 'ledger'" in tidings(env, "ordered", "status", "ledgr",
                                              code=1).stderr


def test_a_queue_with_keys_but_missing_from_the_registry_is_known(
        env: dict[str, str]) -> None:
    async def late(app: Tidings) -> None:  # declared after its app connected
        await app.queue("late").publish({"n": 1})

    with_app(env, late)
    assert orjson.loads(tidings(env, "dlq", "list", "late", "--json").stdout) == []


def test_queue_delete_refuses_a_queue_that_holds_messages_unless_forced(
        env: dict[str, str]) -> None:
    msg_id = tidings(env, "publish", "email", '{"to": "a@b.c"}').stdout.strip()
    refused = tidings(env, "queue", "delete", "email", "--yes", code=1)
    assert "still has 1 messages" in refused.stderr and "--force" in refused.stderr
    declined = tidings(env, "queue", "delete", "email", "--force", input="n\n", code=1)
    assert "1 queued or in flight" in declined.stdout
    assert tidings(env, "inspect", msg_id, "--json").stdout  # still there
    done = orjson.loads(tidings(env, "queue", "delete", "email", "--force", "--yes",
                                "--json").stdout)
    assert done["deleted"] == "email" and done["keys"] >= 12

    async def left(app: Tidings) -> list[bytes]:
        prefix = app.settings.key_prefix
        return [k async for k in app.broker.client.scan_iter(match=f"{prefix}:{{email}}:*")]

    assert with_app(env, left) == []
    names = [q["name"] for q in orjson.loads(tidings(env, "queues", "--json").stdout)]
    assert names == ["sms"]
    tidings(env, "publish", "email", "{}", code=1)  # gone for the CLI too


async def test_app_delete_queue_removes_its_keys_registry_and_campaigns(app: Tidings) -> None:
    from tidings import Campaigns, Recipient

    email = app.queue("email")
    await app.connect()
    await email.publish({"n": 1}, idempotency_key="k")
    with pytest.raises(QueueNotEmptyError) as refused:
        await app.delete_queue("email")
    assert refused.value.held == 1
    await Campaigns.of(app).schedule("c1", "email", [Recipient("u1", {})],
                                     at=_in_a_day())
    assert await app.delete_queue("email", force=True) > 12
    client: Any = app.broker.client
    prefix = app.settings.key_prefix
    assert [k async for k in client.scan_iter(match=f"{prefix}:{{email}}:*")] == []
    assert await app.broker.queue_names() == [] and "email" not in app.queues
    assert not await client.hexists(f"{prefix}:campaigns", "c1")
    with pytest.raises(UnknownQueueError):
        await app.delete_queue("email")


async def test_delete_refuses_a_queue_a_live_worker_consumes(app: Tidings) -> None:
    email = app.queue("email")
    email.handler(lambda msg: None)
    async with app.worker():
        with pytest.raises(QueueNotEmptyError) as refused:
            await email.delete()
    assert refused.value.consumers == 1 and refused.value.held == 0


def _in_a_day() -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(days=1)
