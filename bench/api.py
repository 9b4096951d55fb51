"""``python -m bench.api``: publishing over the HTTP API beside the Python API.

``tidings api`` (uvicorn, uvloop, httptools) runs in its own process; this process drives
it with one keep-alive httpx client (and, to separate the client's cost from the
server's, one aiohttp client): ``CONCURRENCY`` requests in flight, each a single
publish (latency of every request: p50/p99), then batches of 100. In the same run, on the
same server, the Python API does the same (``queue.publish`` with the same concurrency,
``publish_many`` of 100). Rounds alternate the order; medians are reported. Targets:
single >= 3,000 msg/s with p99 < 5 ms, batch-100 >= 30,000 msg/s. Written to
``bench/results/api.json``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import orjson

from tidings import Tidings
from tidings.security.tokens import TokenStore

from .drain import drop_keys
from .stats import latency_summary, median, rounded, rounds_main

CONCURRENCY = 8
VARIANTS = ("http_httpx", "http_aiohttp", "python")
BATCH = 100
PAYLOAD = {"to": "user@example.com", "template": "order-shipped", "vars": {"order": 12345}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, prefix: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "TIDINGS_REDIS_URL": url, "TIDINGS_KEY_PREFIX": prefix,
           "TIDINGS_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "tidings", "api", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("tidings api did not start")


async def _concurrently(n: int, call: Callable[[], Awaitable[None]]) -> tuple[float, list[float]]:
    """(calls per second, latencies) of ``n`` calls, ``CONCURRENCY`` at a time."""
    latencies: list[float] = []
    left = [n]

    async def lane() -> None:
        while left[0] > 0:
            left[0] -= 1
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    return n / (time.perf_counter() - started), latencies


Post = Callable[[str, bytes], Awaitable[tuple[int, bytes]]]
JSON_TYPE = {"Content-Type": "application/json"}


def httpx_post(http: httpx.AsyncClient) -> Post:
    async def post(path: str, body: bytes) -> tuple[int, bytes]:
        r = await http.post(path, content=body, headers=JSON_TYPE)
        return r.status_code, r.content

    return post


def aiohttp_post(session: Any) -> Post:
    async def post(path: str, body: bytes) -> tuple[int, bytes]:
        async with session.post(path, data=body, headers=JSON_TYPE) as r:
            return r.status, await r.read()

    return post


async def http_round(post: Post, n: int) -> dict[str, Any]:
    """Bodies are encoded once and replies checked, not decoded: the client's own work is
    kept small, as it shares the machine's two cores with the server."""
    one = orjson.dumps({"payload": PAYLOAD})

    async def single() -> None:
        status, reply = await post("/v1/queues/notify/messages", one)
        assert status == 201, reply

    batch = orjson.dumps({"messages": [{"payload": PAYLOAD}] * BATCH})
    published = f'"published":{BATCH},'.encode()

    async def many() -> None:
        status, reply = await post("/v1/queues/notify/messages/batch", batch)
        assert status == 200 and published in reply, reply

    rate, latencies = await _concurrently(n, single)
    batches, _ = await _concurrently(max(1, n // 10), many)
    return {"single": rate, "latencies": latencies, "batch": batches * BATCH}


async def python_round(app: Tidings, n: int) -> dict[str, Any]:
    queue = app.queues["notify"]

    async def single() -> None:
        await queue.publish(PAYLOAD)

    async def many() -> None:
        await queue.publish_many([PAYLOAD] * BATCH)

    rate, latencies = await _concurrently(n, single)
    batches, _ = await _concurrently(max(1, n // 10), many)
    return {"single": rate, "latencies": latencies, "batch": batches * BATCH}


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    lat = latency_summary(sorted(x for r in rounds for x in r["latencies"]))
    return {"single_msg_per_s": rounded(median([r["single"] for r in rounds]), 0),
            "single_p50_ms": rounded(lat["p50_ms"]), "single_p99_ms": rounded(lat["p99_ms"]),
            "batch100_msg_per_s": rounded(median([r["batch"] for r in rounds]), 0)}


async def measure(url: str, n: int, rounds: int) -> dict[str, Any]:
    prefix = f"tbench-api-{uuid.uuid4().hex[:10]}"
    app = Tidings(url, key_prefix=prefix)
    app.queue("notify")
    async with app:
        await app.queues["notify"].publish("warm")  # the server knows the queue
        token, _ = await TokenStore(app).create("bench", ["publish:notify"])
        proc, base = start_server(url, prefix)
        figures: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        try:
            limits = httpx.Limits(max_connections=CONCURRENCY,
                                  max_keepalive_connections=CONCURRENCY)
            auth = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=base, limits=limits, headers=auth) as http, \
                    aiohttp.ClientSession(base, headers=auth) as session:
                posts = {"http_httpx": httpx_post(http), "http_aiohttp": aiohttp_post(session)}
                for post in posts.values():
                    await http_round(post, 200)  # warm-up: connections, caches
                for r in range(rounds):
                    order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
                    for what in order:
                        got = (await python_round(app, n) if what == "python"
                               else await http_round(posts[what], n))
                        figures[what].append(got)
                        print(f"round {r + 1}/{rounds} {what}: single {got['single']:,.0f}/s, "
                              f"batch-100 {got['batch']:,.0f}/s", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(10)
            await drop_keys(app)
    return {"messages_per_round": n, "rounds": rounds, "concurrency": CONCURRENCY,
            "batch": BATCH, "client": "httpx.AsyncClient, keep-alive",
            "server": "tidings api (uvicorn, one process)",
            "targets": {"single_msg_per_s": 3000, "single_p99_ms": 5,
                        "batch100_msg_per_s": 30000},
            **{what: _summary(figures[what]) for what in VARIANTS},
            "note": "http_httpx is the figure asked for (a keep-alive httpx client); "
                    "http_aiohttp drives the same server with a lighter client, to show how "
                    "much of the time is the client's: on 2 cores both share the CPU"}


def main(argv: list[str] | None = None) -> None:
    rounds_main("python -m bench.api", __doc__ or "", measure, "api.json", argv)


if __name__ == "__main__":
    main()
