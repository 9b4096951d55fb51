"""deploy/: every metric the Grafana dashboard, the KEDA example and the generated alert
rules reference is one tidings exports; the Prometheus example config is valid; the
README lists the dashboard's panels."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import Recorder
from obs_helpers import family_names, promtool
from test_obs_metrics import reporter_exposition
from tidings import Tidings
from tidings.core.thresholds import AlertSettings
from tidings.observability.alerts import rules, rules_yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "tidings-dashboard.json"
METRIC = re.compile(r"\b((?:tidings|process)_[a-z0-9_]+)\b")


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def keda_queries() -> list[str]:
    scaled = yaml.safe_load((DEPLOY / "keda" / "scaledobject.yaml").read_text())
    return [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]


def rule_exprs() -> list[str]:
    settings = AlertSettings(depth=1000, queues={"marketing": {"oldest_age_high": 60}})
    return [r["expr"] for r in rules(settings)["groups"][0]["rules"]]


@pytest.fixture
async def exported(make_app: Callable[..., Tidings], recorder: Recorder) -> set[str]:
    """Every metric name a worker that is also the fleet reporter exports."""
    return family_names(await reporter_exposition(make_app, recorder))


@pytest.mark.parametrize("source", [dashboard_exprs, keda_queries, rule_exprs],
                         ids=["dashboard", "keda", "rules"])
def test_every_referenced_metric_is_exported(source: Callable[[], list[str]],
                                             exported: set[str]) -> None:
    exprs = source()
    referenced = {name for expr in exprs for name in METRIC.findall(expr)}
    assert referenced, "no metric found: the extraction is broken"
    assert referenced - exported == set()


def test_the_dashboard_covers_what_operators_must_see() -> None:
    used = {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    for needed in ("tidings_queue_depth_messages", "tidings_queue_oldest_message_age_seconds",
                   "tidings_messages_acked_total", "tidings_end_to_end_latency_seconds_bucket",
                   "tidings_handler_errors_total", "tidings_queue_dead_letters",
                   "tidings_worker_up", "tidings_breaker_state"):
        assert needed in used


def test_the_readme_lists_every_dashboard_panel() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Observability"):]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    for title in (p["title"] for p in panels if p["type"] != "row"):
        assert f"| {title} |" in section, title


def test_the_example_prometheus_config_is_valid(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "prometheus" / "prometheus.yml", tmp_path / "prometheus.yml")
    (tmp_path / "tidings-rules.yml").write_text(rules_yaml(AlertSettings()))
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
