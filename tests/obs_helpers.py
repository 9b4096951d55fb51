"""Helpers of the observability tests: scraping a worker's endpoints, running promtool."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
MISSING_PROMETHEUS = ("Debian's prometheus package (promtool, prometheus) is not installed: "
                      ".ci/run installs it; locally: apt-get install prometheus")


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


async def scrape_text(port: int) -> str:
    response = await get(port, "/metrics")
    assert response.status_code == 200, response.text
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (summed if many)."""
    hits = [v for (n, ls), v in found.items()
            if n == name and all((k, v2) in ls for k, v2 in labels.items())]
    return sum(hits) if hits else None


def family_names(text: str) -> set[str]:
    """Every sample name an exposition can show (``_total``, ``_bucket`` ... included)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        suffixes = {"counter": ("_total", "_created"),
                    "histogram": ("_bucket", "_count", "_sum", "_created")}
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


def promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> Any:
    assert PROMTOOL is not None, MISSING_PROMETHEUS
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=60)


@contextlib.asynccontextmanager
async def http_stand_in(path: str, receive: Callable[[web.Request], Awaitable[web.Response]]
                        ) -> AsyncIterator[int]:
    """A small HTTP service (an analytics endpoint, an OTLP collector) on a free port of
    127.0.0.1 that answers POSTs to ``path`` with ``receive``; yields the port."""
    from servers import free_port

    app = web.Application()
    app.router.add_post(path, receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()
