"""``python -m bench.peers``: tidings, the raw redis-py floor and other job queues doing the
same job against the same server in the same run; prints JSON and writes
bench/results/peers.json. Run it from bench/.venv-peers (``make bench-peers``)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..__main__ import git_revision, load_average
from ..stats import RESULTS
from .base import NODE_DIR, PYTHON_PEERS, child_env, spawn, stop
from .report import METRICS, markdown_table, summarize

DEFAULT_URL = "redis://127.0.0.1:6379/0"
PEERS = ("tidings", "raw", "dramatiq", "saq", "celery", "bullmq")
ALWAYS = ("tidings", "raw")  # every ratio needs them
MEASUREMENTS = tuple(METRICS)


@dataclass(frozen=True, slots=True)
class Plan:
    """Counts of one run; ``quick`` shrinks them for a smoke run."""

    rounds: int
    single_n: int
    batch_n: int
    drain_n: int
    e2e_seconds: float
    startup_spawns: int
    warmup: int
    chunk: int = 1000
    e2e_rate: int = 500
    e2e_skip_s: float = 0.25  # the first quarter second warms connections, not counted

    @classmethod
    def full(cls, rounds: int | None) -> Plan:
        return cls(rounds=rounds or 3, single_n=5000, batch_n=20_000, drain_n=20_000,
                   e2e_seconds=10.0, startup_spawns=2, warmup=200)

    @classmethod
    def quick(cls, rounds: int | None) -> Plan:
        return cls(rounds=rounds or 1, single_n=500, batch_n=2000, drain_n=2000,
                   e2e_seconds=1.5, startup_spawns=1, warmup=50)

    def command(self, measurement: str) -> dict[str, Any]:
        """The driver command of one round of ``measurement`` (before url, ns, ...)."""
        commands: dict[str, dict[str, Any]] = {
            "single_publish": {"n": self.single_n, "warmup": self.warmup},
            "batch_publish": {"n": self.batch_n, "chunk": self.chunk},
            "drain": {"n": self.drain_n, "chunk": self.chunk},
            "e2e_latency": {"rate": self.e2e_rate, "seconds": self.e2e_seconds,
                            "skip": int(self.e2e_rate * self.e2e_skip_s)},
            "startup": {"spawns": self.startup_spawns},
        }
        return commands[measurement]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--redis-url", default=os.environ.get("TIDINGS_BENCH_REDIS_URL",
                                                              DEFAULT_URL),
                        help="server URL (default: $TIDINGS_BENCH_REDIS_URL or %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a smoke run under a minute")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="measurements and/or peers to run (repeatable or comma-separated;"
                             f" tidings and raw always run): {', '.join(MEASUREMENTS + PEERS)}")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1); medians")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="worker concurrency for every peer that has one (%(default)s)")
    parser.add_argument("--output", type=Path, default=RESULTS / "peers.json")
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only or [] for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in MEASUREMENTS + PEERS]
    if unknown:
        parser.error(f"unknown name {', '.join(unknown)}; choose from "
                     f"{', '.join(MEASUREMENTS + PEERS)}")
    args.measurements = [m for m in MEASUREMENTS if m in names] or list(MEASUREMENTS)
    chosen = [p for p in PEERS if p in names]
    args.peers = [p for p in PEERS if p in ALWAYS or p in chosen or not chosen]
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    return args


def log(text: str) -> None:
    print(f"[peers] {text}", file=sys.stderr, flush=True)


class Driver:
    """One peer's driver process (bench.peers.driver, or node/bullmq.mjs)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        argv = ([sys.executable, "-m", "bench.peers.driver", peer] if peer in PYTHON_PEERS
                else ["node", str(NODE_DIR / "bullmq.mjs"), "driver"])
        self.proc = spawn(argv, child_env())
        self.hello: dict[str, Any] = json.loads(self.read() or '{"ready": false}')
        if not self.hello.get("ready"):
            stop(self.proc)
            raise SystemExit(f"the {peer} driver did not start (see its errors above)")

    def read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.read()
        if not line:
            return {"ok": False, "error": f"driver exited with status {self.proc.wait()}"}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        stop(self.proc)


class Cleaner:
    """Deletes every key of the run (all of them contain the run's prefix); never FLUSHDB."""

    def __init__(self, url: str) -> None:
        from redis import Redis

        self.r = Redis.from_url(url)

    def delete(self, fragment: str) -> int:
        deleted, chunk = 0, []
        for key in self.r.scan_iter(match=f"*{fragment}*", count=5000):
            chunk.append(key)
            if len(chunk) >= 1000:
                deleted += int(self.r.unlink(*chunk))  # type: ignore[arg-type]
                chunk = []
        if chunk:
            deleted += int(self.r.unlink(*chunk))  # type: ignore[arg-type]
        return deleted

    def server(self) -> dict[str, Any]:
        info: dict[str, Any] = self.r.info("server")  # type: ignore[assignment]
        return {k: info.get(k) for k in ("redis_version", "valkey_version", "io_threads_active")
                if k in info}


def run_measurement(measurement: str, plan: Plan, drivers: dict[str, Driver], cleaner: Cleaner,
                    base: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``plan.rounds`` rounds; the peers' order rotates each round so drift on a noisy
    machine is shared out; keys are deleted after every peer's round."""
    peers = list(drivers)
    rounds: dict[str, list[dict[str, float]]] = {p: [] for p in peers}
    errors: dict[str, list[str]] = {p: [] for p in peers}
    for r in range(plan.rounds):
        shift = r % len(peers)
        for peer in peers[shift:] + peers[:shift]:
            ns = f"{prefix}-{measurement[:2]}{r}-{peer}"
            cmd = {"op": measurement, "ns": ns, **base, **plan.command(measurement)}
            t0 = time.perf_counter()
            reply = drivers[peer].call(cmd)
            cleaner.delete(ns)
            if reply.get("ok"):
                rounds[peer].append(reply["metrics"])
                figures = ", ".join(f"{k}={v:.4g}" for k, v in reply["metrics"].items())
            else:
                errors[peer].append(reply.get("error", "?"))
                figures = f"FAILED {reply.get('error')}"
            log(f"{measurement} round {r + 1}/{plan.rounds} {peer} "
                f"({time.perf_counter() - t0:.1f}s): {figures}")
    return summarize(measurement, rounds, errors)


def machine(cleaner: Cleaner, url: str) -> dict[str, Any]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "node": node or None,
            "server": url, **cleaner.server(), "tidings_git": git_revision(),
            "load_avg_at_start": load_average()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan.quick(args.rounds) if args.quick else Plan.full(args.rounds)
    prefix = f"tpeers-{os.getpid()}-{os.urandom(3).hex()}"
    cleaner = Cleaner(args.redis_url)
    info = machine(cleaner, args.redis_url)
    base = {"url": args.redis_url, "concurrency": args.concurrency}
    started = time.perf_counter()
    drivers: dict[str, Driver] = {}
    results: dict[str, Any] = {}
    try:
        for peer in args.peers:
            drivers[peer] = Driver(peer)
        log(f"prefix {prefix}, peers {', '.join(drivers)}, plan {plan}")
        for measurement in args.measurements:
            results[measurement] = run_measurement(measurement, plan, drivers, cleaner, base,
                                                   prefix)
    finally:
        for driver in drivers.values():
            driver.close()
        left = cleaner.delete(prefix)
        if left:
            log(f"deleted {left} leftover keys of {prefix}")
    return {
        "machine": info,
        "config": {**asdict(plan), "quick": args.quick, "concurrency": args.concurrency,
                   "key_prefix": prefix,
                   "statistic": "median across rounds; the peers' order rotates each round; "
                                "ratio_to_raw = peer / raw; tidings_ratio_to_peer = tidings / "
                                "peer (throughput: > 1 means tidings is faster; latency and "
                                "start-up: < 1 means tidings is faster)"},
        "peers": {p: {"versions": d.hello.get("versions"), "setup": d.hello.get("setup")}
                  for p, d in drivers.items()},
        "results": results,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "load_avg_at_end": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the drivers are stopped and the keys deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    log("\n" + markdown_table(report["results"], list(report["peers"])))
    log(f"wrote {args.output} in {report['elapsed_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
