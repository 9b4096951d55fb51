"""``tidings stats`` (fleet figures for autoscalers) and ``tidings exporter`` (a process
serving the fleet-wide metrics), against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

from conftest import tidings, with_app
from fault_helpers import ROOT, TIDINGS_BIN
from obs_helpers import get, promtool, samples, value
from tidings import Tidings


def seed(env: dict[str, str]) -> None:
    async def publish(app: Tidings) -> None:
        await app.get_queue("email").publish_many(["a", "b"])
        await app.get_queue("email").publish("c", priority="high")
        await app.get_queue("sms").publish("later", delay=600)

    with_app(env, publish, "email", "sms")


def test_stats_json_gives_the_autoscaling_figures(known_env: dict[str, str]) -> None:
    seed(known_env)
    data = json.loads(tidings(known_env, "stats", "--json").output)
    queues = {q["name"]: q for q in data["queues"]}
    email = queues["email"]
    assert email["depth"] == 3
    assert email["lanes"]["normal"]["waiting"] == 2
    assert email["lanes"]["high"]["lag"] == 1
    assert email["lanes"]["high"]["oldest_age"] >= 0
    assert email["consumers"] == 0
    assert queues["sms"]["delayed"] == 1
    assert data["server"]["used_memory"] > 0


def test_stats_of_one_queue_as_a_table(known_env: dict[str, str]) -> None:
    seed(known_env)
    out = tidings(known_env, "stats", "--queue", "sms").output
    assert "sms" in out and "email" not in out
    tidings(known_env, "stats", "--queue", "smss", code=1)  # unknown: one line, exit 1


def test_the_exporter_serves_fleet_metrics_until_sigterm(known_env: dict[str, str]) -> None:
    seed(known_env)
    proc = subprocess.Popen([str(TIDINGS_BIN), "exporter", "--port", "0", "--host", "127.0.0.1"],
                            cwd=ROOT, env={**os.environ, **known_env}, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving http://127.0.0.1:" in line, line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        metrics = asyncio.run(get(port, "/metrics")).text
        ready = asyncio.run(get(port, "/readyz"))
        stats = asyncio.run(get(port, "/stats")).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    found = samples(metrics)
    assert value(found, "tidings_queue_depth_messages", queue="email", lane="normal") == 2
    assert value(found, "tidings_queue_delayed_messages", queue="sms") == 1
    assert value(found, "tidings_fleet_up") == 1
    assert ready.status_code == 200
    assert {q["name"] for q in stats["queues"]} == {"email", "sms"}
    assert promtool("check", "metrics", stdin=metrics).returncode == 0
    assert code == 0
