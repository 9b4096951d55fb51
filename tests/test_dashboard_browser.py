"""The web dashboard in a real browser: Debian's chromium driven by Playwright, against a
live app served by uvicorn on a free port, with real messages in real queues.

Screenshots of the main pages go to docs/screenshots/ with TIDINGS_SCREENSHOTS=1
(``make screenshots``), else to the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Recorder
from dashboard_helpers import READ_ONLY, fill, token
from flow_helpers import wait_until
from tidings import Message, Tidings
from tidings.core.dashboard_settings import DashboardSettings
from tidings.dashboard import create_dashboard
from tidings.flow.breaker import CircuitBreaker
from tidings.queues.queue import Outgoing
from tidings.scheduling.campaign_send import Recipient
from tidings.scheduling.campaigns import Campaigns

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                                reason=f"Debian's chromium is not installed ({CHROMIUM}): "
                                       "apt-get install chromium")
playwright_api = pytest.importorskip("playwright.async_api")


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        try:
            found = await pw.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-gpu"])
        except Exception as exc:  # the binary is there but cannot start here
            pytest.skip(f"chromium at {CHROMIUM} cannot start: {exc}")
        yield found
        await found.close()


async def serve(web: Any) -> tuple[str, Callable[[], Any]]:
    """Serve ``web`` with uvicorn on a free port; returns its URL and a stop function."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(web, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)

    async def stop() -> None:
        server.should_exit = True
        await task
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}", stop


@pytest.fixture
async def live(app: Tidings) -> AsyncIterator[str]:
    await app.connect()
    url, stop = await serve(create_dashboard(app))
    yield url
    await stop()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    yield await context.new_page()
    await context.close()


async def log_in(page: Any, url: str, secret: str) -> None:
    await page.goto(url + "/")
    await page.fill("input[name=token]", secret)
    await page.click("button[type=submit]")
    await page.wait_for_selector("table.queues")


def shot_dir(tmp_path: Path) -> Path:
    if os.environ.get("TIDINGS_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        return SHOTS
    return tmp_path


async def richer(app: Tidings) -> None:
    """Something to see on every page: lanes, delayed, a schedule, a campaign, a breaker."""
    push = app.queue("push", max_attempts=2, backoff_base=0.05)

    @push.handler
    async def handle(msg: Message) -> None:
        await asyncio.sleep(0.15)  # a provider's latency, so the worker is seen busy
        if msg.payload.get("n", 1) % 6 == 0:
            raise TimeoutError("provider timeout")

    await push.publish_many([Outgoing({"n": i}, priority="low") for i in range(40)])
    await push.publish_many([Outgoing({"n": i}, priority="high") for i in range(12)])
    await push.publish({"later": True}, delay=3600)
    await app.schedules.add("daily-digest", queue="email", cron="0 8 * * *",
                            timezone="Europe/Paris")
    await app.schedules.add("heartbeat", queue="push", every=timedelta(minutes=5),
                            max_count=12)
    at = datetime.now(UTC) + timedelta(days=1)
    await Campaigns.of(app).schedule("spring-sale", "push",
                                     [Recipient(f"u{i}", {"user": i}) for i in range(50)],
                                     local_time=time(9), date=at.date())
    breaker = CircuitBreaker(app.broker.client, prefix=app.settings.key_prefix,
                             failure_threshold=1, min_calls=1)
    await breaker.record("sms-provider", False)


async def test_browser_every_page_loads_with_live_overview_and_screenshots(
        app: Tidings, recorder: Recorder, live_for: Callable[..., Any], page: Any,
        tmp_path: Path) -> None:
    ids = await fill(app, recorder)
    await richer(app)
    out = shot_dir(tmp_path)
    url = await live_for(app, DashboardSettings(refresh_seconds=0.5))
    await log_in(page, url, await token(app, ["admin"]))
    email = page.locator('tr[data-queue="email"] td.num').first
    assert await email.inner_text() == "1"
    await page.evaluate("window.reloaded = false")  # gone if the page reloads
    await app.get_queue("email").publish_many(
        [Outgoing({"n": i}, priority="high") for i in range(4)])
    await page.wait_for_function(
        "document.querySelector('tr[data-queue=\"email\"] td.num').innerText === '5'")
    assert await page.evaluate("window.reloaded") is False  # htmx swapped the fragment
    async with app.worker(["push"], concurrency=2):  # throughput and errors to plot
        await page.wait_for_function(
            "(document.querySelector('tr[data-queue=\"push\"] polyline.spark-ok') || "
            "{getAttribute: () => ''}).getAttribute('points').split(' ').length >= 6")
        await page.screenshot(path=str(out / "overview.png"), full_page=True)
        await page.goto(url + "/workers")
        assert await page.locator("tr[data-worker]").count() == 1
        await page.screenshot(path=str(out / "workers.png"), full_page=True)
    pages = {"queue": "/queues/sms", "dead-letters": "/queues/sms/dlq",
             "dead-letter": f"/queues/sms/dlq/{ids[0]}", "trace": f"/trace?q={ids[1]}",
             "schedules": "/schedules", "breakers": "/breakers"}
    for name, path in pages.items():
        reply = await page.goto(url + path)
        assert reply.status == 200, path
        assert await page.locator("main h1").count() >= 1
        await page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    await page.goto(url + f"/queues/sms/dlq/{ids[0]}")
    assert "provider timeout" in await page.locator("pre.traceback").inner_text()


async def test_browser_replay_click_puts_the_dead_letter_back_in_its_lane(
        app: Tidings, recorder: Recorder, live: str, page: Any) -> None:
    ids = await fill(app, recorder)
    sms = app.get_queue("sms")
    await log_in(page, live, await token(app, ["admin"]))
    await page.goto(f"{live}/queues/sms/dlq/{ids[0]}")
    await page.click("button:has-text('Replay')")
    await page.wait_for_selector("text=Yes, replay")
    assert await sms.dlq.count() == 4  # asked first, nothing done yet
    await page.click("button:has-text('Yes, replay')")
    await page.wait_for_selector("p.flash")
    assert "replayed 1" in await page.locator("p.flash").inner_text()
    info = await sms.inspect(ids[0])
    assert info is not None and info.state == "queued" and await sms.dlq.count() == 3


async def test_browser_pause_stops_a_running_worker_and_resume_restarts_it(
        make_app: Callable[..., Tidings], live_for: Callable[..., Any], page: Any) -> None:
    ui, workers = make_app(), make_app()
    url = await live_for(ui)
    email = workers.queue("email")
    handled: list[Any] = []
    got = asyncio.Event()

    @email.handler
    async def handle(msg: Message) -> None:
        handled.append(msg.payload)
        got.set()

    await workers.connect()
    async with workers.worker(["email"]):
        await email.publish("before")
        await asyncio.wait_for(got.wait(), 20)
        await log_in(page, url, await token(ui, ["admin"]))
        await page.goto(url + "/queues/email")
        await page.click("button:has-text('Pause')")
        await page.wait_for_selector("text=Resume")
        seen = workers.flow.pause_guard._seen  # the worker's own reading of the flag
        await wait_until(lambda: seen.get("email", (0, False))[1])
        await email.publish_many(["during-1", "during-2"])
        read_at = seen["email"][0]
        await wait_until(lambda: seen["email"][0] > read_at)  # it looked again: still paused
        assert handled == ["before"] and (await email.stats()).depth == 2
        await page.click("button:has-text('Resume')")
        await wait_until(lambda: len(handled) == 3)
    assert sorted(handled[1:]) == ["during-1", "during-2"]


async def test_browser_read_only_principal_sees_no_action_buttons(
        app: Tidings, recorder: Recorder, live: str, page: Any) -> None:
    ids = await fill(app, recorder)
    await log_in(page, live, await token(app, READ_ONLY, "viewer"))
    for path in ("/", "/queues/sms", "/queues/sms/dlq", f"/queues/sms/dlq/{ids[0]}",
                 "/schedules", "/breakers"):
        await page.goto(live + path)
        assert await page.locator("main form[method=post]").count() == 0, path
        assert await page.locator("main input[type=checkbox]").count() == 0, path


@pytest.fixture
async def live_for() -> AsyncIterator[Callable[..., Any]]:
    stops: list[Callable[[], Any]] = []

    async def start(app: Tidings, settings: DashboardSettings | None = None) -> str:
        await app.connect()
        url, stop = await serve(create_dashboard(app, settings=settings))
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        await stop()
