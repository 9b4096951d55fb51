"""The tidings command against a real server (JSON output is the contract scripts use)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest
from typer.testing import CliRunner

from tidings import Tidings
from tidings.cli import cli

runner = CliRunner()


@pytest.fixture
def env(redis_url: str) -> Iterator[dict[str, str]]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield {"TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": prefix}
    app = Tidings(redis_url, key_prefix=prefix)
    with app.sync() as client:
        client._run(_drop(app))


async def _drop(app: Tidings) -> None:
    client = app.broker.client
    keys = [k async for k in client.scan_iter(match=f"{app.settings.key_prefix}:*")]
    if keys:
        await client.delete(*keys)


def invoke(env: dict[str, str], *args: str) -> str:
    result = runner.invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_publish_then_queues_and_inspect_as_json(env: dict[str, str]) -> None:
    msg_id = invoke(env, "publish", "email", '{"to": "a@b.c"}', "--priority", "high",
                    "--correlation-id", "c-9").strip()
    invoke(env, "publish", "email", '"later"', "--delay", "3600")
    queues = orjson.loads(invoke(env, "queues", "--json"))
    [email] = [q for q in queues if q["name"] == "email"]
    assert email["lanes"] == {"high": 1, "normal": 0, "low": 0} and email["delayed"] == 1
    info = orjson.loads(invoke(env, "inspect", msg_id, "--json"))
    assert info["state"] == "queued" and info["priority"] == "high"
    assert info["payload"] == {"to": "a@b.c"} and info["headers"]["correlation_id"] == "c-9"
    table = invoke(env, "queues")
    assert "email" in table and "dlq" in table


def test_delayed_cancel_and_reschedule(env: dict[str, str]) -> None:
    msg_id = invoke(env, "publish", "email", "1", "--delay", "3600").strip()
    due = invoke(env, "delayed", "reschedule", "email", msg_id, "--delay", "60").strip()
    assert due.endswith("+00:00")
    assert invoke(env, "delayed", "cancel", "email", msg_id).strip() == "cancelled"
    result = runner.invoke(cli, ["delayed", "cancel", "email", msg_id], env=env)
    assert result.exit_code == 1


def test_dlq_list_replay_purge(env: dict[str, str], redis_url: str) -> None:
    app = Tidings(redis_url, key_prefix=env["TIDINGS_KEY_PREFIX"])
    q = app.queue("sms")
    with app.sync() as client:
        ids = client.publish_many("sms", [1, 2, 3])

        async def park() -> None:
            # Dead-letter the three through the real script path: deliver, then settle.
            from tidings.engine.scripts import SCRIPTS
            from tidings.queues.queue import GROUP

            c = app.broker.client
            await app.broker.ensure_groups(q)
            res = await c.xreadgroup(GROUP, "cli-test", {q.keys[1]: ">"}, count=3)
            for sid, _ in res[0][1]:
                token = await c.hincrby(q.keys[6], f"1{sid.decode()}", 1)
                await SCRIPTS.dead_letter(c, q.keys, [GROUP, 1, sid.decode(), token,
                                                      "bad number", '{"type": "ValueError"}'])

        client._run(park())
    listed = orjson.loads(invoke(env, "dlq", "list", "sms", "--json"))
    assert sorted(i["message_id"] for i in listed) == sorted(ids)
    assert {i["reason"] for i in listed} == {"bad number"}
    assert invoke(env, "dlq", "replay", "sms", "--id", ids[0]).strip() == "replayed 1"
    assert invoke(env, "dlq", "purge", "sms", "--all", "--yes").strip() == "purged 2"
    assert orjson.loads(invoke(env, "dlq", "list", "sms", "--json")) == []
    assert orjson.loads(invoke(env, "queues", "--json"))[0]["lanes"]["normal"] == 1


def test_weights_are_stored_for_running_workers(env: dict[str, str], redis_url: str) -> None:
    invoke(env, "weights", "email", "1", "1", "1")
    app = Tidings(redis_url, key_prefix=env["TIDINGS_KEY_PREFIX"])
    q = app.queue("email")
    with app.sync() as client:
        stored = client._run(app.broker.client.hget(q.keys[11], "weights"))
    assert stored == b"1,1,1"


@pytest.mark.parametrize("args", [
    ["publish", "email", "{not json"],
    ["publish", "email", "1", "--priority", "urgent"],
    ["dlq", "replay", "email"],
    ["weights", "email", "0", "0", "0"],
])
def test_bad_input_exits_non_zero_with_a_message(env: dict[str, str], args: list[str]) -> None:
    result = runner.invoke(cli, args, env=env)
    assert result.exit_code == 2
    assert result.output.strip()
