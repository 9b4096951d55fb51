"""``tidings demo``: a notification platform in miniature, on the embedded server.

Email, SMS and push handlers (some failing transiently, one poison message), a realistic mix
of priorities, delays, duplicates and an expiring message, live progress, and a summary.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .app import Tidings
from .core.errors import Retry
from .core.events import Event, EventKind
from .core.message import Message
from .core.middleware import Middleware
from .engine.tls import redacted
from .queues.queue import Outgoing


class DemoStats(Middleware):
    """Counts lifecycle events per queue: the same interface metrics and tracing use."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.by_lane: Counter[str] = Counter()
        self.dead_reasons: Counter[str] = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)

    def on_event(self, event: Event) -> None:
        self.counts[event.queue][event.kind.value] += 1
        if event.kind is EventKind.ACKED:
            self.by_lane[event.priority] += 1
        elif event.kind is EventKind.DEAD_LETTERED:
            self.dead_reasons[event.reason or "?"] += 1
        elif event.kind is EventKind.EXPIRED:
            self.dead_reasons["expired"] += 1
        if event.kind is EventKind.DELIVERED and event.message and event.attempt == 0:
            m = event.message
            delivered_ms = int(event.timestamp * 1000)  # stamped by the app's clock
            self.latency[event.priority].append(delivered_ms - max(m.created_at_ms,
                                                                   m.not_before_ms or 0))

    def settled(self) -> int:
        return sum(c["acked"] + c["dead_lettered"] + c["expired"] for c in self.counts.values())


def build_app(stats: DemoStats) -> Tidings:
    app = Tidings(key_prefix=f"demo-{int(time.time())}", middleware=[stats])
    fast_retry = {"backoff_base": 0.05, "backoff_cap": 0.5}
    email = app.queue("email", max_attempts=4, visibility_timeout=10, **fast_retry)
    sms = app.queue("sms", max_attempts=5, **fast_retry)
    push = app.queue("push", max_attempts=3, **fast_retry)
    rng = random.Random(7)

    @email.handler(concurrency=64)
    async def send_email(msg: Message) -> None:
        await asyncio.sleep(rng.uniform(0.001, 0.008))  # the SMTP call
        if rng.random() < 0.05:
            raise ConnectionError("SMTP 421: service not available, try again")

    @sms.handler(concurrency=32)
    async def send_sms(msg: Message) -> None:
        await asyncio.sleep(rng.uniform(0.002, 0.01))
        if rng.random() < 0.03:
            raise Retry(0.2, "provider throttled (429)")

    @push.handler(concurrency=16)
    def send_push(msg: Message) -> None:  # a sync handler: runs in a thread pool
        if msg.payload.get("device_token") == "POISON":
            raise ValueError("malformed device token")
        time.sleep(0.001)

    return app


def mix(count: int) -> dict[str, list[Outgoing]]:
    rng = random.Random(42)
    out: dict[str, list[Outgoing]] = {"email": [], "sms": [], "push": []}
    for i in range(count):
        channel = rng.choices(("email", "sms", "push"), (5, 2, 3))[0]
        roll = rng.random()
        priority, kind = (("high", "password_reset") if roll < 0.1 else
                          ("normal", "order_update") if roll < 0.6 else ("low", "newsletter"))
        delay = rng.uniform(0.5, 2.0) if rng.random() < 0.1 else None
        out[channel].append(Outgoing(
            {"user": f"u{i}", "kind": kind, "device_token": f"t{i}"}, priority,
            idempotency_key=f"{kind}:{i}", delay=delay,
            headers={"correlation_id": f"order-{i // 3}"}))
    # A retrying orchestrator publishes some messages twice: the copies are dropped.
    out["email"] += [Outgoing(o.payload, o.priority, o.idempotency_key)
                     for o in out["email"][:50]]
    out["push"].append(Outgoing({"user": "u-bad", "device_token": "POISON"}, "normal"))
    out["sms"].append(Outgoing({"user": "u-late", "kind": "otp"}, "high", delay=0.3,
                               expires_in=0.1))  # due after it expires: never sent
    return out


def progress(stats: DemoStats, expected: int, started: float) -> Table:
    table = Table("queue", "delivered", "acked", "retried", "dead", "expired",
                  title=f"tidings demo: {stats.settled()}/{expected} settled, "
                        f"{time.monotonic() - started:.1f}s")
    for name in ("email", "sms", "push"):
        c = stats.counts[name]
        table.add_row(name, *(str(c[k]) for k in ("delivered", "acked", "retried",
                                                  "dead_lettered", "expired")))
    return table


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_demo(count: int, console: Console, quiet: bool = False,
                   ledger: bool = False) -> dict[str, Any]:
    """``ledger``: record everything in the ledger too (the embedded PostgreSQL unless
    TIDINGS_DATABASE_URL names one), and show one message's trace."""
    stats = DemoStats()
    app = build_app(stats)
    batches = mix(count)
    if ledger:
        app.ledger.embedded = True
        app.ledger.install(relay=False)
    async with app:
        if ledger:
            await app.ledger.migrate()
        if not quiet:
            console.print(f"server: {redacted(app.broker.url or '')}")
        started = time.monotonic()
        published = 0
        for name, items in batches.items():
            ids = await app.queues[name].publish_many(items, chunk_size=500)
            published += len(set(ids))
        duplicates = sum(len(v) for v in batches.values()) - published
        async with app.worker(concurrency=256):
            with Live(progress(stats, published, started), console=console, refresh_per_second=8,
                      transient=quiet) as live:
                deadline = time.monotonic() + 120
                while stats.settled() < published and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                    live.update(progress(stats, published, started))
        elapsed = time.monotonic() - started
        traced = await _trace_one(app, console, quiet) if ledger else None
        await _cleanup(app)
    latency = {lane: {"p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99)}
               for lane, v in sorted(stats.latency.items())}
    summary = {
        "published": published, "duplicates_dropped": duplicates,
        "processed_per_lane": dict(stats.by_lane),
        "retries": sum(c["retried"] for c in stats.counts.values()),
        "dead_lettered": dict(stats.dead_reasons), "seconds": round(elapsed, 2),
        "latency_first_delivery": latency, "complete": stats.settled() >= published,
    }
    if traced is not None:
        summary["ledger_trace"] = traced
    if not quiet:
        console.print()
        show_summary(console, summary)
        if app.settings.redis_url is None:
            console.print(f"The embedded server keeps running (data in "
                          f"{app.settings.data_dir}/), so the next tidings command starts at "
                          "once. Stop it with: tidings server stop"
                          + (" (and the PostgreSQL with: tidings db stop)"
                             if ledger and app.settings.ledger.database_url is None else ""))
    return summary


def show_summary(console: Console, summary: dict[str, Any]) -> None:
    """The demo's results as tables: totals, then per lane, then why messages were parked."""
    from .cli.output import show_table

    show_table(console, ["published", "duplicates dropped", "retries", "seconds", "complete"],
               [[summary["published"], summary["duplicates_dropped"], summary["retries"],
                 summary["seconds"], "yes" if summary["complete"] else "no"]],
               title="summary")
    latency = summary["latency_first_delivery"]
    lanes = [lane for lane in ("high", "normal", "low")
             if lane in latency or lane in summary["processed_per_lane"]]
    show_table(console, ["lane", "processed", "first delivery p50 ms", "p99 ms"],
               [[lane, summary["processed_per_lane"].get(lane, 0),
                 f"{latency.get(lane, {}).get('p50_ms', 0):.1f}",
                 f"{latency.get(lane, {}).get('p99_ms', 0):.1f}"] for lane in lanes],
               title="per priority lane")
    if summary["dead_lettered"]:
        show_table(console, ["reason", "messages"], sorted(summary["dead_lettered"].items()),
                   title="dead-lettered", text=["reason"])


async def _trace_one(app: Tidings, console: Console, quiet: bool) -> dict[str, Any]:
    """The ledger's story of a message that was retried (else of any message)."""
    from .cli.output import show_table

    await app.ledger.flush()
    pool = await app.ledger.pool()
    msg_id = await pool.fetchval(
        "SELECT message_id FROM messages WHERE queue = ANY($1) ORDER BY attempts DESC, "
        "message_id LIMIT 1", list(app.queues))
    (found,) = await app.ledger.trace(msg_id)
    timeline = [[e.at.isoformat(timespec="milliseconds"), e.kind, e.attempt, e.error or ""]
                for e in found.events]
    if not quiet:
        console.print()
        show_table(console, ["at", "event", "attempt", "error"], timeline,
                   title=f"tidings trace {msg_id}", ids=["at"], text=["error"])
    return {"message_id": msg_id, "state": found.state,
            "events": [e.kind for e in found.events]}


async def _cleanup(app: Tidings) -> None:
    client = app.broker.client
    prefix = app.settings.key_prefix
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i:i + 500])
