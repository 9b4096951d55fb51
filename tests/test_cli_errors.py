"""Errors of the tidings command: one line, one exit code table, a traceback only on demand."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from typing import Any

import pytest

from conftest import tidings, with_app
from test_access import prefix_rules, with_credentials
from tidings import Tidings
from tidings.cli.support import explain
from tidings.core.errors import (
    AuthenticationFailedError,
    BrokerUnavailableError,
    ConfigError,
    MessageNotFoundError,
    PermissionDeniedError,
    UntrustedCertificateError,
)


@pytest.fixture
def env(known_env: dict[str, str]) -> dict[str, str]:
    return known_env


def one_line(result: Any) -> str:
    line = str(result.stderr).strip()
    assert line.startswith("error: ") and "\n" not in line, result.stderr
    assert "Traceback" not in result.output
    return line


@pytest.mark.parametrize(("exc", "code"), [
    (MessageNotFoundError("x"), 1), (ConfigError("TIDINGS_X", "bad"), 2),
    (BrokerUnavailableError("server unreachable"), 3),
    (AuthenticationFailedError("default", "WRONGPASS"), 4),
    (PermissionDeniedError("app", "NOPERM"), 4), (RuntimeError("a bug"), 5),
    (UntrustedCertificateError("rediss://db:6380", "certificate verify failed"), 3),
])
def test_every_error_maps_to_one_exit_code(exc: Exception, code: int) -> None:
    message, got = explain(exc)
    assert got == code and str(exc) in message


def test_an_unreachable_server_exits_3(env: dict[str, str]) -> None:
    result = tidings(env, "queues", code=3, TIDINGS_REDIS_URL="redis://127.0.0.1:1/0",
                     TIDINGS_CONNECT_RETRIES="0")
    assert "is the server running?" in one_line(result)


def test_a_bad_setting_exits_2_naming_the_variable(env: dict[str, str]) -> None:
    result = tidings(env, "queues", code=2, TIDINGS_WORKER_CONCURRENCY="0")
    assert "TIDINGS_WORKER_CONCURRENCY" in one_line(result)
    sys.modules.pop("tests.apps.cli_app", None)
    worker = tidings(env, "worker", "tests.apps.cli_app:app", code=2,
                     TIDINGS_LOG_LEVEL="bogus")
    assert "TIDINGS_LOG_LEVEL" in one_line(worker)


def test_a_malformed_settings_file_exits_2_naming_file_and_line(
        env: dict[str, str], tmp_path: Any) -> None:
    (tmp_path / "tidings.toml").write_text('log_level = "INFO"\nshutdown_grace = = 3\n')
    line = one_line(tidings(env, "queues", code=2, TIDINGS_CONFIG_DIR=str(tmp_path)))
    assert "tidings.toml" in line and "line 2" in line


@pytest.mark.parametrize(("args", "named"), [
    (["worker", ":"], "MODULE:APP"), (["worker", "no_such_module:app"], "MODULE:APP"),
    (["queues", "--app", ":"], "--app"), (["ordered", "worker", "x y"], "MODULE:APP"),
    (["worker", "tests.apps.cli_app:nothing"], "MODULE:APP"),
])
def test_a_bad_app_spec_is_a_usage_error_naming_where_it_came_from(
        env: dict[str, str], args: list[str], named: str) -> None:
    line = one_line(tidings(env, *args, code=2))
    assert f"Invalid value for {named}" in line
    assert "Empty module name" not in line


def test_an_app_module_that_fails_to_import_says_where(env: dict[str, str]) -> None:
    sys.modules.pop("tests.apps.broken_app", None)
    line = one_line(tidings(env, "worker", "tests.apps.broken_app:app", code=2))
    assert "NameError" in line and "broken_app.py:9" in line


@pytest.mark.parametrize("args", [
    ["worker", "tests.apps.cli_app:app", "--concurrency", "0"],
    ["worker", "tests.apps.cli_app:app", "--grace", "nan"],
    ["publish", "email", "1", "--delay", "nan"], ["publish", "email", "1", "--delay", "inf"],
    ["publish", "email", "1", "--delay", "-1"],
    ["delayed", "reschedule", "email", "x", "--delay", "inf"],
    ["dlq", "replay", "email", "--all", "--rate", "nan"],
    ["dlq", "replay", "email", "--all", "--rate", "0"],
    ["dlq", "replay", "email"], ["dlq", "list", "email", "--limit", "0"],
    ["publish", "email", "{not json"], ["publish", "email", "1", "--priority", "urgent"],
    ["weights", "email", "0", "0", "0"], ["publish"], ["pubish"],
])
def test_bad_input_is_one_line_and_exit_2(env: dict[str, str], args: list[str]) -> None:
    one_line(tidings(env, *args, code=2))


def test_a_misspelt_command_suggests_the_right_one(env: dict[str, str]) -> None:
    assert "Did you mean 'publish'" in one_line(tidings(env, "pubish", code=2))


@pytest.mark.parametrize("args", [
    ["delayed", "cancel", "email", "01JDX9V6Z3K5Q8W2E4R6T8Y0U1"],
    ["delayed", "reschedule", "email", "01JDX9V6Z3K5Q8W2E4R6T8Y0U1", "--delay", "5"],
    ["inspect", "01JDX9V6Z3K5Q8W2E4R6T8Y0U1"],
    ["schedules", "show", "nope"], ["schedules", "delete", "nope", "--yes"],
    ["schedules", "pause", "nope"], ["campaigns", "cancel", "nope", "--yes"],
    ["breakers", "--reset", "nosuch"], ["ordered", "retry", "nope", "k"],
    ["worker", "tests.apps.cli_app:app", "--queues", "emial"],
])
def test_a_miss_is_exit_1_everywhere(env: dict[str, str], args: list[str]) -> None:
    sys.modules.pop("tests.apps.cli_app", None)
    one_line(tidings(env, *args, code=1))


def test_breakers_reset_of_an_unknown_breaker_suggests_known_ones(
        env: dict[str, str]) -> None:
    async def declare(app: Tidings) -> None:
        from tidings.flow import CircuitBreaker

        await CircuitBreaker(app.broker.client, prefix=app.settings.key_prefix).record(
            "smtp", False)

    with_app(env, declare)
    line = one_line(tidings(env, "breakers", "--reset", "smpt", code=1))
    assert "no breaker 'smpt' (did you mean 'smtp'?)" in line


def test_an_unexpected_error_is_one_line_and_a_traceback_only_with_debug(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tidings.queues.queue import Queue

    async def broken(self: Queue) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(Queue, "stats", broken)
    line = one_line(tidings(env, "queues", code=5))
    assert "unexpected RuntimeError: boom" in line and "--debug" in line
    debugged = tidings(env, "--debug", "queues", code=1)  # CliRunner: the exception escaped
    assert isinstance(debugged.exception, RuntimeError)


def _commands(group: Any, path: list[str]) -> list[list[str]]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += _commands(command, [*path, name])
        else:
            found.append([*path, name])
    return found


def test_help_shows_no_bool_types_and_no_rst_markup(env: dict[str, str]) -> None:
    from typer.main import get_command

    from tidings.cli.main import cli

    commands = _commands(get_command(cli), [])
    assert ["queue", "delete"] in commands and len(commands) > 30
    for args in [[], *commands]:
        text = tidings(env, *args, "--help", COLUMNS="100").stdout
        assert "<bool>" not in text and "``" not in text and ":class:" not in text, args
    assert "Exit codes" in tidings(env, "--help").stdout


def test_tables_at_80_columns_keep_ids_and_headers_whole(env: dict[str, str]) -> None:
    async def fill(app: Tidings) -> list[str]:
        from test_cli import _park

        await app.queue("notifications-sms").publish({"n": 1})
        return await _park(app, 3)

    ids = with_app(env, fill, "notifications-sms", "sms")
    for args, wanted, headers in (
            (["dlq", "list", "sms"], ids,
             ["message", "reason", "error", "attempts", "dead", "priority"]),
            (["queues"], ["notifications-sms"],
             ["queue", "normal", "flight", "delayed", "consumers", "acked"])):
        text = tidings(env, *args, COLUMNS="80").stdout
        assert max(len(line) for line in text.splitlines()) <= 80
        assert "─" * 20 in text  # a table, not the record fallback
        for value in wanted:
            assert value in text, (value, text)
        assert set(headers) <= set(re.findall(r"\S+", text)), text


def test_a_table_too_wide_for_80_columns_becomes_records(env: dict[str, str]) -> None:
    name = "a-queue-name-far-too-long-for-a-table-row"
    with_app(env, lambda app: app.queue(name).publish({"n": 1}), name)
    text = tidings(env, "queues", COLUMNS="80").stdout
    assert f"queue: {name}" in text and "consumers: 0" in text


async def test_refused_credentials_and_permissions_exit_4(
        redis_url: str, acl_user: Callable[..., Any],
        make_app: Callable[..., Tidings]) -> None:
    prefix = make_app().settings.key_prefix
    user = await acl_user(*prefix_rules(prefix))
    wrong = {"TIDINGS_REDIS_URL": with_credentials(redis_url, user, "wrong-password"),
             "TIDINGS_KEY_PREFIX": prefix}
    line = one_line(await asyncio.to_thread(tidings, wrong, "queues", code=4))
    assert user in line and "password" in line
    outsider = await acl_user("~elsewhere:*", "+@all")
    denied = {"TIDINGS_REDIS_URL": with_credentials(redis_url, outsider, "right-password"),
              "TIDINGS_KEY_PREFIX": prefix}
    assert outsider in one_line(await asyncio.to_thread(tidings, denied, "queues", code=4))
