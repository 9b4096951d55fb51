"""The middleware interface, the JSON log middleware, consumer registry and the demo."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from rich.console import Console

from conftest import Recorder
from tidings import EventKind, JsonLogMiddleware, Message, Middleware, Tidings
from tidings.observability.logs import configure_logging


async def test_json_log_lines_carry_message_id_queue_and_correlation_id(
        make_app: Callable[..., Tidings]) -> None:
    out = io.StringIO()
    configure_logging("DEBUG", json=True, stream=out)
    recorder = Recorder()
    app = make_app(middleware=[JsonLogMiddleware(), recorder])
    q = app.queue("email", max_attempts=2, backoff_base=0.01)

    @q.handler
    async def handle(msg: Message) -> None:
        if msg.attempts == 0:
            raise ConnectionError("smtp down")

    try:
        msg_id = await q.publish({"to": "a"}, correlation_id="order-7")
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, 1)
    finally:
        structlog.reset_defaults()
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()
             if line.startswith("{") and '"message_id"' in line]
    events = [line["event"] for line in lines]
    assert events[:1] == ["published"] and "retried" in events and events[-1] == "acked"
    assert all(line["message_id"] == msg_id and line["queue"] == "email"
               and line["correlation_id"] == "order-7" for line in lines)
    [retried] = [line for line in lines if line["event"] == "retried"]
    assert retried["level"] == "warning" and "smtp down" in retried["error"]


class Around(Middleware):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def around_handler(self, message: Message | list[Message],
                             call_next: Callable[[], Awaitable[Any]]) -> Any:
        assert isinstance(message, Message)
        self.calls.append(f"before:{message.payload}")
        result = await call_next()
        self.calls.append(f"after:{message.payload}")
        return result


class Broken(Middleware):
    def on_event(self, event: Any) -> None:
        raise RuntimeError("a buggy metrics exporter")


async def test_around_handler_wraps_calls_and_a_failing_middleware_changes_nothing(
        make_app: Callable[..., Tidings]) -> None:
    around, recorder = Around(), Recorder()
    app = make_app(middleware=[Broken(), around, recorder])
    q = app.queue("push")
    seen: list[str] = []

    @q.handler
    async def handle(msg: Message) -> None:
        seen.append(f"handler:{msg.payload}")

    await q.publish("x")
    async with app.worker():
        await recorder.wait_count(EventKind.ACKED, 1)
    assert around.calls == ["before:x", "after:x"] and seen == ["handler:x"]


async def test_dead_consumer_is_removed_only_after_its_messages_were_reclaimed(
        app: Tidings, recorder: Recorder) -> None:
    q = app.queue("email", visibility_timeout=0.2)

    @q.handler
    async def handle(msg: Message) -> None:
        return None

    await q.publish_many(range(3))
    await app.connect()
    client = app.broker.client
    await client.xreadgroup("tidings", "ghost", {q.keys[1]: ">"}, count=3)
    await client.zadd(q.keys[10], {"ghost": 1})  # last heartbeat: long ago
    groups_before = await client.xinfo_consumers(q.keys[1], "tidings")
    assert [c["name"] for c in groups_before] == [b"ghost"]
    async with app.worker() as worker:
        await recorder.wait_count(EventKind.ACKED, 3)
        for runner in worker.runners:
            await runner.reclaim()  # the next janitor pass, now that ghost holds nothing
        names = [c["name"] for c in await client.xinfo_consumers(q.keys[1], "tidings")]
        assert b"ghost" not in names and worker.consumer.encode() in names
        assert await client.zscore(q.keys[10], "ghost") is None


async def test_demo_runs_to_completion(redis_url: str, monkeypatch: Any) -> None:
    from tidings.demo import run_demo

    monkeypatch.setenv("TIDINGS_REDIS_URL", redis_url)
    summary = await run_demo(300, Console(file=io.StringIO()), quiet=True)
    assert summary["complete"] is True
    assert summary["duplicates_dropped"] == 50
    assert summary["dead_lettered"] == {"max_attempts": 1, "expired": 1}
    assert sum(summary["processed_per_lane"].values()) == summary["published"] - 2


async def test_demo_summary_is_tables_and_says_the_embedded_server_keeps_running(
        tmp_path: Any, monkeypatch: Any) -> None:
    from tidings.demo import run_demo
    from tidings.engine.embedded import server_status, stop_server

    monkeypatch.delenv("TIDINGS_REDIS_URL", raising=False)
    monkeypatch.setenv("TIDINGS_DATA_DIR", str(tmp_path))
    screen = io.StringIO()
    try:
        await run_demo(100, Console(file=screen, width=100))
        assert server_status(tmp_path)["alive"]
    finally:
        stop_server(tmp_path)
    text = screen.getvalue()
    assert "per priority lane" in text and "dead-lettered" in text and "max_attempts" in text
    assert "{'" not in text and "'}" not in text  # no raw Python dicts
    assert "The embedded server keeps running" in text and "tidings server stop" in text
