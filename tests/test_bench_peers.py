"""Smoke test of the peer benchmark (bench/peers) in the project's normal environment.

The peers' libraries live in bench/.venv-peers only, so this checks what needs none of
them: the modules import, the tidings and raw peers load, and the pure functions that
turn rounds into medians, ratios and the table compute what the JSON promises.
"""

from __future__ import annotations

import io

import pytest
from bench.peers.__main__ import Plan, parse_args
from bench.peers.base import Ctx, load_peer
from bench.peers.report import markdown_table, medians, ratios, summarize
from bench.peers.worker import Recorder


def test_medians_take_the_middle_round_of_each_figure() -> None:
    rounds = [{"msg_per_s": 10.0, "p99_ms": 3.0}, {"msg_per_s": 30.0, "p99_ms": 1.0},
              {"msg_per_s": 20.0, "p99_ms": 2.0}]
    assert medians(rounds) == {"msg_per_s": 20.0, "p99_ms": 2.0}
    assert medians([]) == {}


def test_ratios_divide_each_peer_by_the_base_and_leave_missing_figures_none() -> None:
    values = {"raw": {"msg_per_s": 100.0}, "tidings": {"msg_per_s": 50.0}, "celery": {}}
    assert ratios(values, "raw", ("msg_per_s",)) == {
        "raw": {"msg_per_s": 1.0}, "tidings": {"msg_per_s": 0.5}, "celery": {"msg_per_s": None}}


def test_summarize_gives_ratios_to_raw_and_tidings_ratio_to_each_peer() -> None:
    rounds = {"tidings": [{"msg_per_s": 6000.0}, {"msg_per_s": 4000.0}],
              "raw": [{"msg_per_s": 10000.0}, {"msg_per_s": 10000.0}],
              "dramatiq": [{"msg_per_s": 2500.0}, {"msg_per_s": 2500.0}]}
    result = summarize("drain", rounds, {"dramatiq": ["RuntimeError: once"]})
    assert result["peers"]["tidings"]["median"] == {"msg_per_s": 5000.0}
    assert result["peers"]["tidings"]["rounds"] == rounds["tidings"]
    assert result["peers"]["dramatiq"]["errors"] == ["RuntimeError: once"]
    assert result["ratio_to_raw"]["tidings"] == {"msg_per_s": 0.5}
    assert result["tidings_ratio_to_peer"] == {"raw": {"msg_per_s": 0.5},
                                               "dramatiq": {"msg_per_s": 2.0}}


def test_markdown_table_has_a_row_per_figure_and_a_column_per_peer() -> None:
    rounds = {"tidings": [{"p50_ms": 1.0, "p99_ms": 2.0}], "raw": [{"p50_ms": 0.5, "p99_ms": 1.0}]}
    table = markdown_table({"e2e_latency": summarize("e2e_latency", rounds, {})},
                           ["tidings", "raw"])
    assert table.splitlines() == [
        "| figure | tidings | raw |", "|---|--:|--:|",
        "| e2e_latency p50_ms | 1.00 (2.00x) | 0.50 |",
        "| e2e_latency p99_ms | 2.00 (2.00x) | 1.00 |"]


def test_only_picks_measurements_and_peers_and_always_keeps_tidings_and_raw() -> None:
    args = parse_args(["--only", "drain,dramatiq", "--only", "startup"])
    assert args.measurements == ["drain", "startup"]
    assert args.peers == ["tidings", "raw", "dramatiq"]
    everything = parse_args([])
    assert everything.peers == ["tidings", "raw", "dramatiq", "saq", "celery", "bullmq"]
    assert len(everything.measurements) == 5


def test_only_refuses_an_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--only", "kafka"])
    assert exc.value.code == 2
    assert "unknown name kafka" in capsys.readouterr().err


def test_quick_plan_is_smaller_than_the_full_plan() -> None:
    quick, full = Plan.quick(None), Plan.full(None)
    for measurement in ("single_publish", "batch_publish", "drain"):
        assert quick.command(measurement)["n"] < full.command(measurement)["n"]
    assert full.command("e2e_latency") == {"rate": 500, "seconds": 10.0, "skip": 125}


def test_tidings_and_raw_peers_load_without_the_peers_environment() -> None:
    ctx = Ctx("redis://127.0.0.1:6379/0", "ns", 8)
    assert load_peer("tidings")(ctx).startup_argv()[1:3] == [
        "worker", "bench.peers.apps.tidings_app:app"]
    assert load_peer("raw").name == "raw"


def test_recorder_counts_drained_jobs() -> None:
    rec = Recorder("drain", 3, 0, io.StringIO())
    rec.started = 0.0
    for i in range(3):
        rec.handle({"i": i})
    assert rec.done.is_set()
    result = rec.result()
    assert result["elapsed_s"] == rec.finished
    assert result["msg_per_s"] == 3 / rec.finished


def test_recorder_answers_the_warm_up_and_skips_the_first_latencies() -> None:
    out = io.StringIO()
    rec = Recorder("e2e", 3, 1, out)
    rec.handle({"i": -1, "ts": 0.0})
    assert out.getvalue() == "warm\n"
    assert rec.count == 0
    for i in range(3):
        rec.handle({"i": i, "ts": 0.0})
    assert rec.done.is_set()
    assert len(rec.latencies) == 2  # job 0 falls in the skipped warm-up window
    assert rec.result()["received"] == 3
