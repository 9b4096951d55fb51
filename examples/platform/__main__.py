"""``python -m examples.platform [--redis-url URL] [--json]``: run the whole platform once.

Starts the embedded server (unless ``--redis-url``), the fake providers, the four channel
services as processes, then the orchestrator; waits until every provider received what the
routing rules sent it (some first fail: a 503 from Twilio, FCM's UNAVAILABLE, a device that
is UNREGISTERED, a 429 from a webhook receiver, a greylisting relay), prints it, and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from .common import ENV_HTTP, ENV_SMTP, PUSH_TOKEN, SMS_ACCOUNT, SMS_TOKEN, SUBSCRIBERS
from .fake_providers import FakeProviders, Reply
from .orchestrator import build, orchestrate

SERVICES = ("email_service", "sms_service", "push_service", "webhook_service")
ROUTE_OF = {"email": "email", "sms": "sms", "push": "push", "webhooks": "webhook"}


async def start_service(name: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"examples.platform.{name}", env=env,
        stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError(f"{name} did not start (exit {await process.wait()})")
    return process


def script_failures(fake: FakeProviders) -> None:
    """What goes wrong on the way, and is retried or dead-lettered."""
    fake.script("email", Reply(code="451 4.7.1 greylisted, try again"))
    fake.script("sms", Reply(503))
    fake.script("push", Reply(503, code="UNAVAILABLE"), Reply(404, code="UNREGISTERED"))
    fake.script("webhook", Reply(429, retry_after=0))


async def forget(redis_url: str, prefix: str) -> None:
    """Delete the run's keys (they share its prefix), so a shared server is left as found."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i:i + 500])
    finally:
        await client.aclose()


async def dead_letters(app: Any, queues: dict[str, int], wanted: int) -> dict[str, int]:
    """Dead letters per queue, once ``wanted`` are there (they land as the others go)."""
    for _ in range(200):
        dead = {q: len(await app.queue(q).dlq.list()) for q in queues}
        if sum(dead.values()) >= wanted:
            break
        await asyncio.sleep(0.05)
    return dead


def describe(fake: FakeProviders) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for got in fake.delivered("email"):
        subject = next((line[9:] for line in str(got.body).splitlines()
                        if line.startswith("Subject: ")), "")
        out.setdefault("email", []).append(f"{got.headers['to']}: {subject}")
    out["sms"] = [f"{g.body['To']}: {g.body['Body']}" for g in fake.delivered("sms")]
    out["push"] = [f"{g.body['message']['token']}: {g.body['message']['notification']['body']}"
                   for g in fake.delivered("push")]
    out["webhook"] = [f"{g.path} (signature verified): {g.body.decode()}"
                      for g in fake.delivered("webhook")]
    return {k: sorted(v) for k, v in out.items()}


async def run(redis_url: str, prefix: str) -> dict[str, Any]:
    async with FakeProviders(sms_account=SMS_ACCOUNT, sms_token=SMS_TOKEN,
                             push_token=PUSH_TOKEN) as fake:
        fake.secrets.update(SUBSCRIBERS)
        script_failures(fake)
        env = {**os.environ, "TIDINGS_REDIS_URL": redis_url, "TIDINGS_KEY_PREFIX": prefix,
               ENV_HTTP: fake.http_url, ENV_SMTP: f"{fake.smtp_host}:{fake.smtp_port}"}
        os.environ.update({k: env[k] for k in ("TIDINGS_REDIS_URL", "TIDINGS_KEY_PREFIX")})
        services = [await start_service(name, env) for name in SERVICES]
        app = build()
        try:
            async with app:
                copies = await orchestrate(app, fake.http_url)
                # The UNREGISTERED device's push is dead-lettered, not delivered.
                expected = {**copies, "push": copies["push"] - 1}
                for queue, count in expected.items():
                    await fake.wait_for(ROUTE_OF[queue], count, timeout=60)
                dead = await dead_letters(app, copies, wanted=1)
        finally:
            for process in services:
                process.terminate()
            for process in services:
                await process.wait()
            await forget(redis_url, prefix)
        received = describe(fake)
        return {"published": copies, "delivered": {k: len(v) for k, v in received.items()},
                "dead_lettered": dead, "attempts": {r: len(fake.received(r)) for r in
                                                    ("email", "sms", "push", "webhook")},
                "repeats": {r: fake.repeats(r) for r in ("email", "sms", "push", "webhook")},
                "received": received}


def print_report(report: dict[str, Any]) -> None:
    for provider, lines in report["received"].items():
        print(f"{provider}: {len(lines)} delivered "
              f"({report['attempts'][provider]} requests, the rest retried)")
        for line in lines:
            print(f"    {line}")
    print("published copies:", report["published"])
    print("dead-lettered:", {k: v for k, v in report["dead_lettered"].items() if v})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.platform", description=__doc__)
    parser.add_argument("--redis-url", help="a server to use instead of the embedded one")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    prefix = f"platform-{uuid.uuid4().hex[:8]}"
    data_dir = None
    url = args.redis_url
    if url is None:
        from tidings.engine.embedded import ensure_server

        data_dir = Path(tempfile.mkdtemp(prefix="tidings-platform-"))
        url = ensure_server(data_dir)
    try:
        report = asyncio.run(run(url, prefix))
    finally:
        if data_dir is not None:
            from tidings.engine.embedded import stop_server

            stop_server(data_dir)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
