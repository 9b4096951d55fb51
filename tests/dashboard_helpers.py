"""Shared by the dashboard tests: a queue with real dead letters, tokens, and logging in."""

from __future__ import annotations

import re
from typing import Any

import httpx

from conftest import Recorder
from tidings import DeadLetter, EventKind, Message, Tidings
from tidings.security.auth import Authenticator

READ_ONLY = ["dlq:read:*", "queue:inspect:*"]
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def fill(app: Tidings, recorder: Recorder, count: int = 4) -> list[str]:
    """Queue "sms": ``count`` dead letters (half TimeoutError, half opted out) and one
    message waiting in "email"; returns the dead letters' ids."""
    q = app.queue("sms", max_attempts=1)
    app.queue("email")

    @q.handler
    async def handle(msg: Message) -> None:
        if msg.payload % 2:
            raise DeadLetter("opted out")
        raise TimeoutError("provider timeout")

    ids = await q.publish_many(list(range(count)))
    async with app.worker(["sms"]):
        await recorder.wait_count(EventKind.DEAD_LETTERED, count)
    await app.get_queue("email").publish({"to": "a@b.c"}, priority="high")
    return list(ids)


async def token(app: Tidings, scopes: list[str], name: str = "ops") -> str:
    secret, _ = await app.extension(Authenticator).tokens.create(name, scopes)
    return secret


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def log_in(client: httpx.AsyncClient, secret: str, root: str = "") -> str:
    """Log in through the form; returns the session's CSRF token."""
    form = await client.get(f"{root}/login")
    reply = await client.post(f"{root}/login", data={"csrf": csrf_of(form.text),
                                                     "token": secret, "next": f"{root}/"})
    assert reply.status_code == 303, reply.text
    page = await client.get(f"{root}/")
    assert page.status_code == 200
    return csrf_of(page.text)


async def post(client: httpx.AsyncClient, path: str, csrf: str, **data: Any) -> httpx.Response:
    return await client.post(path, data={"csrf": csrf, **data})
