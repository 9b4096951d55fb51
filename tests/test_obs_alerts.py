"""Alert thresholds: generated Prometheus rules (promtool check rules and test rules), the
in-process evaluator's alert_firing / alert_resolved events, settings file and CLI."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import Recorder, tidings
from obs_helpers import promtool
from tidings import EventKind, Message, Tidings
from tidings.core.clock import ManualClock
from tidings.core.errors import ConfigError
from tidings.core.settings import load_settings
from tidings.core.thresholds import AlertSettings
from tidings.observability.alerts import rules, rules_yaml

RULES_TEST = Path(__file__).parent / "alerts" / "tidings-rules-test.yml"
MARKETING = {"oldest_age_high": 60, "no_consumers_for": None}


def test_default_rules_watch_what_a_notification_platform_needs() -> None:
    found = {(r["alert"], r["labels"].get("lane")): r
             for r in rules(AlertSettings())["groups"][0]["rules"]}
    high = found[("TidingsOldestMessageAge", "high")]
    assert high["expr"].endswith("> 5") and high["labels"]["severity"] == "critical"
    assert found[("TidingsNoConsumers", None)]["for"] == "1m"
    assert ("TidingsDeadLettersGrowing", None) in found
    assert ("TidingsQueueDepth", None) not in found  # off unless a depth is set


def test_a_queue_override_gets_its_own_rule_and_leaves_the_default() -> None:
    generated = rules(AlertSettings(queues={"marketing": MARKETING}))["groups"][0]["rules"]
    high = [r for r in generated if r["labels"].get("lane") == "high"]
    assert [(r["labels"]["scope"], r["expr"]) for r in high] == [
        ("default", 'max by (queue, lane) (tidings_queue_oldest_message_age_seconds'
                    '{lane="high", queue!~"marketing"}) > 5'),
        ("marketing", 'max by (queue, lane) (tidings_queue_oldest_message_age_seconds'
                      '{lane="high", queue="marketing"}) > 60')]
    consumers = [r for r in generated if r["alert"] == "TidingsNoConsumers"]
    assert [r["labels"]["scope"] for r in consumers] == ["default"]
    assert 'queue!~"marketing"' in consumers[0]["expr"]


def test_promtool_checks_and_unit_tests_the_generated_rules(tmp_path: Path) -> None:
    text = rules_yaml(AlertSettings(queues={"marketing": MARKETING}))
    (tmp_path / "tidings-rules.yml").write_text(text)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    checked = promtool("check", "rules", "tidings-rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_thresholds_come_from_the_settings_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tidings.toml").write_text(
        "[alerts]\noldest_age_high = 2\n[alerts.queues.marketing]\nno_consumers_for = false\n")
    monkeypatch.setenv("TIDINGS_CONFIG_DIR", str(tmp_path))
    alerts = load_settings().alerts
    assert alerts.for_queue("email").oldest_age_high == 2
    assert alerts.for_queue("marketing").no_consumers_for is None
    assert alerts.for_queue("email").no_consumers_for == 60


def test_a_bad_threshold_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"marketing\.depthh: unknown threshold"):
        load_settings(alerts={"queues": {"marketing": {"depthh": 3}}})
    with pytest.raises(ConfigError, match="error_ratio"):
        load_settings(alerts={"error_ratio": 2})


def test_the_cli_prints_the_rules_of_the_apps_thresholds(cli_env: dict[str, str]) -> None:
    result = tidings(cli_env, "alerts", "rules", TIDINGS_ALERTS='{"oldest_age_high": 3}')
    generated = yaml.safe_load(result.output)
    high = [r for r in generated["groups"][0]["rules"] if r["labels"].get("lane") == "high"]
    assert high[0]["expr"].endswith("> 3")


async def test_the_evaluator_fires_and_resolves_through_the_middleware(
        make_app: Callable[..., Tidings], recorder: Recorder) -> None:
    clock = ManualClock()
    app = make_app(middleware=[recorder], clock=clock)
    email = app.queue("email")
    obs = app.observability
    obs.thresholds(oldest_age_high=0.001, pending_for=10)
    obs.thresholds("email", no_consumers_for=None)
    evaluator = obs.evaluate_alerts()
    async with app:
        await email.publish("urgent", priority="high")
        # The age is measured on the server's clock, which the manual clock does not move:
        # let 10 ms of it pass (no outcome is awaited here; the condition needs the time).
        await asyncio.sleep(0.01)
        await evaluator.tick()  # the condition holds, not yet for 10 s
        assert recorder.of(EventKind.ALERT_FIRING) == []
        clock.advance(10)
        await evaluator.tick()
        (firing,) = recorder.of(EventKind.ALERT_FIRING)
        assert (firing.reason, firing.queue, firing.priority) == (
            "TidingsOldestMessageAge", "email", "high")
        assert evaluator.firing == [("TidingsOldestMessageAge", "email", "high")]
        email.handler(_noop)
        async with app.worker():
            await recorder.wait_count(EventKind.ACKED, 1)
        await evaluator.tick()
    (resolved,) = recorder.of(EventKind.ALERT_RESOLVED)
    assert (resolved.reason, resolved.queue) == ("TidingsOldestMessageAge", "email")
    assert evaluator.firing == []
    assert len(recorder.of(EventKind.ALERT_FIRING)) == 1  # fired once, not every tick


async def test_the_evaluator_reports_a_queue_without_consumers(
        make_app: Callable[..., Tidings], recorder: Recorder) -> None:
    clock = ManualClock()
    app = make_app(middleware=[recorder], clock=clock)
    app.queue("email")
    evaluator = app.observability.evaluate_alerts()
    async with app:
        await evaluator.tick()
        clock.advance(61)  # no_consumers_for defaults to 60 s
        await evaluator.tick()
    (firing,) = recorder.of(EventKind.ALERT_FIRING)
    assert (firing.reason, firing.queue) == ("TidingsNoConsumers", "email")


async def _noop(msg: Message) -> None:
    return None


async def _noop(msg: Message) -> None:
    return None
