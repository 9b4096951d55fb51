"""``tidings bridge ...``: a bad setting or option is one line and exit 2; an unreachable
broker is waited for, one log line per attempt, until SIGTERM (exit 0). The conformance
suite runs the commands as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import tidings
from servers import free_port


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["kafka-in"], {}, "TIDINGS_BRIDGE__KAFKA__TOPIC: is required for kafka-in"),
    (["kafka-in", "--topic", "t"], {"TIDINGS_BRIDGE__KAFKA__BATCH": "0"},
     "kafka.batch: Input should be greater than or equal to 1"),
    (["sqs-in", "--queue-url", "not-a-url"], {}, "queue_url: must be the queue's"),
    (["rabbitmq-out"], {}, "TIDINGS_BRIDGE__RABBITMQ__ROUTING_KEY: is required"),
    (["nats-in", "--stream", "s"], {}, "TIDINGS_BRIDGE__NATS__SUBJECT: is required"),
    (["sns-out", "--topic-arn", "topic"], {}, "topic_arn: must be a topic ARN"),
    (["rabbitmq-in", "--amqp-queue", "q", "--url", "http://x"], {},
     "url: must be an amqp:// or amqps:// URL"),
])
def test_a_bad_bridge_setting_is_one_line_and_exit_2(
        cli_env: dict[str, str], args: list[str], env: dict[str, str], expected: str) -> None:
    result = tidings(cli_env, "bridge", *args, code=2, **env)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.output


@pytest.mark.timeout(60)
def test_an_unreachable_broker_is_waited_for_one_line_per_attempt(
        cli_env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tidings", "bridge", "kafka-in", "--topic", "t",
         "--bootstrap-servers", f"127.0.0.1:{free_port()}"],
        env={**os.environ, **cli_env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    assert process.stderr is not None
    attempts = []
    for line in process.stderr:
        if "kafka-in t: connection lost" in line:
            attempts.append(line)
            if len(attempts) == 2:
                break
    assert process.poll() is None, "the bridge exited instead of waiting for its broker"
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert "(attempt 1)" in attempts[0] and "(attempt 2)" in attempts[1]


def test_every_bridge_has_a_command(cli_env: dict[str, str]) -> None:
    result = tidings(cli_env, "bridge", "--help")
    for kind in ("rabbitmq-in", "rabbitmq-out", "nats-in", "nats-out", "kafka-in",
                 "kafka-out", "sqs-in", "sqs-out", "sns-out"):
        assert kind in result.output
