"""The API through a real uvicorn (``tidings api`` in its own process), fuzzed from its
own OpenAPI document with schemathesis (bounded: no 500 for any generated input), and
the committed document kept current."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from api_helpers import make_tokens
from conftest import drop_keys, new_prefix
from dashboard_helpers import csrf_of
from tidings import Tidings
from tidings.api.openapi import document

DOC = Path(__file__).parent.parent / "docs" / "openapi.json"
schema = schemathesis.openapi.from_dict(orjson.loads(DOC.read_bytes()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)  # the server is starting: nothing to await but its socket
    raise AssertionError("tidings api did not become ready")


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """``tidings api`` on a free port, for a fresh prefix with the queues email and sms."""
    prefix = new_prefix()

    async def prepare() -> dict[str, str]:
        async with Tidings(redis_url, key_prefix=prefix) as app:
            app.queue("email")
            app.queue("sms")
            await app.queues["email"].publish("warm")  # the server knows both queues
            await app.queues["sms"].publish("warm")
            return await make_tokens(app)

    tokens = asyncio.run(prepare())
    port = _free_port()
    env = {**os.environ, "TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": prefix}
    proc = subprocess.Popen([sys.executable, "-m", "tidings", "api", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        yield url, tokens
    finally:
        proc.terminate()
        proc.wait(10)

        async def drop() -> None:
            async with Tidings(redis_url, key_prefix=prefix) as app:
                await drop_keys(app.broker.client, prefix)

        asyncio.run(drop())


def test_publish_and_read_back_through_a_real_uvicorn(
        server: tuple[str, dict[str, str]]) -> None:
    url, tokens = server
    auth = {"Authorization": f"Bearer {tokens['admin']}"}
    with httpx.Client(base_url=url, headers=auth) as http:
        made = http.post("/v1/queues/email/messages", json={"payload": {"to": "a@b.c"}})
        assert made.status_code == 201, made.text
        shown = http.get(f"/v1/messages/{made.json()['id']}")
        assert shown.json()["payload"] == {"to": "a@b.c"} and shown.json()["state"] == "queued"
        refused = http.get("/v1/queues", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401 and refused.json()["error"]["type"]


def test_tidings_api_serves_the_dashboard_at_ui(server: tuple[str, dict[str, str]]) -> None:
    url, tokens = server
    with httpx.Client(base_url=url) as http:
        visitor = http.get("/ui/queues/email")
        assert visitor.status_code == 303
        assert visitor.headers["location"] == "/ui/login?next=/ui/queues/email"
        form = http.get("/ui/login")
        csrf = csrf_of(form.text)
        logged = http.post("/ui/login", data={"csrf": csrf, "token": tokens["admin"],
                                              "next": "/ui/queues/email"})
        assert logged.status_code == 303 and logged.headers["location"] == "/ui/queues/email"
        page = http.get("/ui/queues/email")
        assert page.status_code == 200 and "email" in page.text


def _surface(doc: dict[str, Any]) -> tuple[set[tuple[str, str, tuple[str, ...]]],
                                          dict[str, list[str]]]:
    """Every operation with its parameters, and every schema with its fields."""
    operations = {(path, method, tuple(sorted(p["name"] for p in op.get("parameters", []))))
                  for path, item in doc["paths"].items() for method, op in item.items()}
    schemas = {name: sorted(schema.get("properties", {}))
               for name, schema in doc["components"]["schemas"].items()}
    return operations, schemas


def test_the_committed_openapi_document_is_what_the_app_generates() -> None:
    committed, generated = DOC.read_bytes(), document()
    old, new = orjson.loads(committed), orjson.loads(generated)
    assert _surface(old) == _surface(new), "run `make openapi` and commit docs/openapi.json"
    if old["info"]["x-generated-with"] == new["info"]["x-generated-with"]:
        assert committed == generated, "run `make openapi` and commit docs/openapi.json"


@pytest.fixture(scope="module")
def admin_server(server: tuple[str, dict[str, str]]) -> tuple[str, dict[str, str]]:
    return server


_calls: list[int] = []


@schema.parametrize()
@settings(max_examples=15, deadline=None, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_never_get_a_server_error(
        case: schemathesis.Case, admin_server: tuple[str, dict[str, str]]) -> None:
    url, tokens = admin_server
    _calls.append(1)
    if case.path_parameters and "queue" in case.path_parameters and len(_calls) % 2:
        case.path_parameters["queue"] = "email"  # half the calls reach a real queue
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {tokens['admin']}"}
    response = case.call(base_url=url, timeout=10)
    assert response.status_code < 500 or (
        case.path == "/v1/health" and response.status_code == 503), (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}")


def test_cli_start_up_does_not_import_fastapi_or_uvicorn() -> None:
    code = ("import sys, tidings.cli.main; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'uvicorn', 'starlette')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
