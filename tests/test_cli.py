"""The tidings command against a real server (JSON output is the contract scripts use)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import tidings, with_app
from tidings import Tidings

APP = "tests.apps.cli_app:app"


@pytest.fixture
def env(known_env: dict[str, str]) -> dict[str, str]:
    return known_env


@pytest.fixture
def fresh_cli_app() -> Iterator[None]:
    """Each test imports tests.apps.cli_app anew (its app reads the test's key prefix)."""
    sys.modules.pop("tests.apps.cli_app", None)
    yield
    sys.modules.pop("tests.apps.cli_app", None)


def out(env: dict[str, str], *args: str, **options: Any) -> str:
    return str(tidings(env, *args, **options).stdout)


def test_publish_then_queues_and_inspect_as_json(env: dict[str, str]) -> None:
    msg_id = out(env, "publish", "email", '{"to": "a@b.c"}', "--priority", "high",
                 "--correlation-id", "c-9").strip()
    out(env, "publish", "email", '"later"', "--delay", "3600")
    queues = orjson.loads(out(env, "queues", "--json"))
    [email] = [q for q in queues if q["name"] == "email"]
    assert email["lanes"] == {"high": 1, "normal": 0, "low": 0} and email["delayed"] == 1
    info = orjson.loads(out(env, "inspect", msg_id, "--json"))
    assert info["state"] == "queued" and info["priority"] == "high"
    assert info["payload"] == {"to": "a@b.c"} and info["headers"]["correlation_id"] == "c-9"
    table = out(env, "queues")
    assert "email" in table and "dlq" in table


def test_delayed_cancel_and_reschedule(env: dict[str, str]) -> None:
    msg_id = out(env, "publish", "email", "1", "--delay", "3600").strip()
    due = out(env, "delayed", "reschedule", "email", msg_id, "--delay", "60").strip()
    assert due.endswith("+00:00")
    assert out(env, "delayed", "cancel", "email", msg_id).strip() == "cancelled"
    tidings(env, "delayed", "cancel", "email", msg_id, code=1)
    tidings(env, "delayed", "reschedule", "email", msg_id, "--delay", "5", code=1)


async def _park(app: Tidings, count: int) -> list[str]:
    """Publish ``count`` messages to sms and dead-letter them through the real scripts."""
    from tidings.engine.scripts import SCRIPTS
    from tidings.queues.queue import GROUP

    q = app.queue("sms")
    ids = await q.publish_many(range(count))
    c = app.broker.client
    res = await c.xreadgroup(GROUP, "cli-test", {q.keys[1]: ">"}, count=count)
    for sid, _ in res[0][1]:
        token = await c.hincrby(q.keys[6], f"1{sid.decode()}", 1)
        await SCRIPTS.dead_letter(c, q.keys, [GROUP, 1, sid.decode(), token, "bad number",
                                              '{"type": "ValueError"}'])
    return ids


def test_dlq_list_replay_purge(env: dict[str, str]) -> None:
    ids = with_app(env, lambda app: _park(app, 3))
    listed = orjson.loads(out(env, "dlq", "list", "sms", "--json"))
    assert sorted(i["message_id"] for i in listed) == sorted(ids)
    assert {i["reason"] for i in listed} == {"bad number"}
    assert out(env, "dlq", "replay", "sms", "--id", ids[0]).strip() == "replayed 1"
    assert orjson.loads(out(env, "dlq", "purge", "sms", "--all", "--yes", "--json")) == {
        "purged": 2}
    assert orjson.loads(out(env, "dlq", "list", "sms", "--json")) == []
    assert out(env, "dlq", "purge", "sms", "--all", "--yes", code=1).strip() == "purged 0"
    [sms] = [q for q in orjson.loads(out(env, "queues", "--json")) if q["name"] == "sms"]
    assert sms["lanes"]["normal"] == 1


def test_weights_are_stored_for_running_workers(env: dict[str, str]) -> None:
    out(env, "weights", "email", "1", "1", "1")

    async def stored(app: Tidings) -> Any:
        return await app.broker.client.hget(app.queue("email").keys[11], "weights")

    assert with_app(env, stored) == b"1,1,1"


def test_a_queue_declared_by_the_app_module_is_known(cli_env: dict[str, str],
                                                     fresh_cli_app: None) -> None:
    msg_id = out(cli_env, "publish", "big", "{}", "--app", APP).strip()
    assert orjson.loads(out(cli_env, "inspect", msg_id, "--queue", "big", "--json"))["id"] == (
        msg_id)


def test_publish_reads_a_large_payload_from_stdin_and_a_file(
        cli_env: dict[str, str], fresh_cli_app: None, tmp_path: Path) -> None:
    payload = {"blob": "x" * (10 * 1024 * 1024)}
    raw = orjson.dumps(payload)
    from_stdin = out(cli_env, "publish", "big", "-", "--app", APP, input=raw).strip()
    path = tmp_path / "payload.json"
    path.write_bytes(raw)
    sys.modules.pop("tests.apps.cli_app", None)
    from_file = out(cli_env, "publish", "big", f"@{path}", "--app", APP).strip()
    for msg_id in (from_stdin, from_file):
        sys.modules.pop("tests.apps.cli_app", None)
        info = orjson.loads(out(cli_env, "inspect", msg_id, "--app", APP, "--json"))
        assert info["payload"] == payload
    missing = tidings(cli_env, "publish", "big", f"@{tmp_path / 'nope.json'}", code=2)
    assert "cannot read" in missing.stderr and "nope.json" in missing.stderr


def test_python_dash_m_tidings_is_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "tidings", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "publish" in done.stdout

