"""``tidings routes ...`` against the test server: each change one audited version, bad
rules one line and a non-zero exit."""

from __future__ import annotations

import json

from conftest import tidings


def test_add_list_test_remove_history_rollback(cli_env: dict[str, str]) -> None:
    out = tidings(cli_env, "routes", "add", "push", "order.*", "push").output
    assert "rules version 1" in out
    tidings(cli_env, "routes", "add", "sms", "order.shipped", "sms",
            "--filter", "payload.user.sms_opt_in",
            "--transform", '{"select": "{to: user.phone}"}')
    listed = json.loads(tidings(cli_env, "routes", "list", "--json").output)
    assert listed["version"] == 2
    assert [b["name"] for b in listed["bindings"]] == ["push", "sms"]
    assert "order.shipped" in tidings(cli_env, "routes", "list").output

    found = json.loads(tidings(cli_env, "routes", "test", "order.shipped",
                               '{"user": {"sms_opt_in": true, "phone": "+44"}}',
                               "--json").output)
    assert found["matched"] == ["push", "sms"]
    assert [c["payload"] for c in found["copies"]] == [
        {"user": {"sms_opt_in": True, "phone": "+44"}}, {"to": "+44"}]
    shown = tidings(cli_env, "routes", "test", "user.new", "{}").output
    assert "dead letter" in shown and "no binding matches" in shown

    tidings(cli_env, "routes", "remove", "push")
    history = json.loads(tidings(cli_env, "routes", "history", "--json").output)
    assert [(h["version"], h["action"]) for h in history] == [(3, "remove"), (2, "add"),
                                                             (1, "add")]
    assert history[0]["actor"].startswith("cli:")
    assert "restored as version 4" in tidings(cli_env, "routes", "rollback", "2").output
    listed = json.loads(tidings(cli_env, "routes", "list", "--json").output)
    assert [b["name"] for b in listed["bindings"]] == ["push", "sms"]


def test_bad_rules_are_one_line_and_exit_2(cli_env: dict[str, str]) -> None:
    result = tidings(cli_env, "routes", "add", "sms", "order.*", "sms",
                     "--filter", "payload.x ==", code=2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "bindings[sms].filter" in lines[0] and "line 1, column 13" in lines[0]
    result = tidings(cli_env, "routes", "remove", "nothing", code=1)
    assert "no binding 'nothing'" in result.output
    result = tidings(cli_env, "routes", "rollback", "9", code=1)
    assert "no stored rule set version 9" in result.output


def test_publish_to_a_topic(cli_env: dict[str, str]) -> None:
    tidings(cli_env, "routes", "add", "push", "order.*", "push")
    out = json.loads(tidings(cli_env, "routes", "publish", "order.shipped", '{"n": 1}',
                             "--idempotency-key", "o-1", "--json").output)
    assert [(d["binding"], d["queue"], d["new"]) for d in out["deliveries"]] == [
        ("push", "push", True)]
    again = tidings(cli_env, "routes", "publish", "order.shipped", '{"n": 1}',
                    "--idempotency-key", "o-1").output
    assert "(already published)" in again
    assert "dead letter of unrouted: unrouted" in tidings(
        cli_env, "routes", "publish", "user.new", "{}").output
    result = tidings(cli_env, "routes", "publish", "order.*", "{}", code=2)
    assert "topic:" in result.output


def test_reroute_after_adding_the_missing_binding(cli_env: dict[str, str]) -> None:
    tidings(cli_env, "routes", "publish", "user.new", '{"id": 1}')
    tidings(cli_env, "routes", "add", "welcome", "user.*", "email")
    out = json.loads(tidings(cli_env, "routes", "reroute", "--json").output)
    assert out == {"routed": 1, "unrouted": 0, "skipped": 0}
    assert "0 routed" in tidings(cli_env, "routes", "reroute").output  # nothing left
