"""Progress of long operations: the Python callbacks and how the CLI shows them."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, time

import orjson
import pytest
from rich.console import Console

from conftest import tidings, with_app
from tidings import Campaigns, Recipient, Tidings
from tidings.cli.output import PlainProgress, duration, progress
from tidings.scheduling import campaign_progress

DAY = date(datetime.now(UTC).year + 1, 1, 12)


def people(n: int) -> list[Recipient]:
    return [Recipient(f"u{i}", {"user": i}) for i in range(n)]


async def test_campaign_schedule_reports_recipients_done_per_round_trip(app: Tidings) -> None:
    app.queue("push")
    seen: list[tuple[int, int | None]] = []
    await Campaigns.of(app).schedule("p", "push", people(2500), local_time=time(9), date=DAY,
                                     progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2500, 2500)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 2
    unsized: list[tuple[int, int | None]] = []
    await Campaigns.of(app).schedule("q", "push", iter(people(10)), local_time=time(9),
                                     date=DAY, progress=lambda d, t: unsized.append((d, t)))
    assert unsized == [(10, None)]


async def test_campaign_cancel_reports_each_batch(app: Tidings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(campaign_progress, "SWEEP_BATCH", 400)
    app.queue("push")
    campaigns = Campaigns.of(app)
    await campaigns.schedule("p", "push", people(1000), local_time=time(9), date=DAY)
    seen: list[tuple[int, int | None]] = []
    await campaigns.cancel("p", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(400, 1000), (800, 1000), (1000, 1000)]


def test_plain_progress_prints_at_most_every_two_seconds_and_a_last_line() -> None:
    now = [0.0]
    stream = io.StringIO()
    report = PlainProgress("replaying", stream, clock=lambda: now[0])
    for done in range(1, 11):
        now[0] = done * 0.5
        report(done * 100, 1000)
    report.finish()
    assert stream.getvalue().splitlines() == [
        "replaying: 400/1000 (2s)", "replaying: 800/1000 (4s)", "replaying: 1000/1000 (5s)"]
    quick = io.StringIO()
    fast = PlainProgress("purging", quick, clock=lambda: 0.0)
    fast(5, None)
    fast.finish()
    assert quick.getvalue() == ""  # done before a line was due: only the result shows


def test_a_terminal_gets_a_bar_and_json_gets_nothing() -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=80)
    with progress("cancelling promo", terminal) as report:
        report(5, 10)
    assert "cancelling promo" in screen.getvalue()
    silent, stream = io.StringIO(), io.StringIO()
    with progress("x", Console(file=silent), quiet=True, stream=stream) as report:
        report(5, 10)
    assert silent.getvalue() == stream.getvalue() == ""


def test_campaign_cancel_with_json_prints_only_json(cli_env: dict[str, str]) -> None:
    with_app(cli_env, lambda app: Campaigns.of(app).schedule(
        "promo", "push", people(50), local_time=time(9), date=DAY), "push")
    result = tidings(cli_env, "campaigns", "cancel", "promo", "--yes", "--json")
    assert orjson.loads(result.stdout)["cancelled"] == 50 and result.stderr == ""


@pytest.mark.parametrize(("seconds", "shown"), [
    (900, "15m"), (5400, "1h30m"), (86400 * 2, "2d"), (1.5, "1.5s"), (0, "0s"), (61, "1m1s")])
def test_durations_print_one_way(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown
