"""``python -m bench``: run the measurements, print JSON, write bench/results/latest.json."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from importlib import metadata
from pathlib import Path
from typing import Any

from .core import MEASUREMENTS, Bench, Plan, evaluate_targets, log
from .stats import RESULTS

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark tidings against the same work written directly in redis-py.")
    parser.add_argument(
        "--redis-url", default=os.environ.get("TIDINGS_BENCH_REDIS_URL", DEFAULT_URL),
        help="server URL, or 'embedded' for tidings' embedded server in .tidings-bench "
             "(default: $TIDINGS_BENCH_REDIS_URL or %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="small counts and fewer rounds: a smoke run under a minute")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only this measurement (repeatable or comma-separated): "
                             f"{', '.join(MEASUREMENTS)}")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per measurement (default 5; quick 3); the median is reported")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                        help="event loop for both sides (default: uvloop if installed)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json",
                        help="where to write the JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    names: list[str] = []
    for item in args.only or []:
        names += [n.strip() for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement {', '.join(unknown)}; choose from "
                     f"{', '.join(MEASUREMENTS)}")
    args.only = names or list(MEASUREMENTS)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


EMBEDDED_DIR = Path(".tidings-bench")


def resolve_url(url: str) -> tuple[str, Callable[[], Any] | None]:
    """The server URL, and for ``embedded`` a callback that stops the server if we started it."""
    if url != "embedded":
        return url, None
    if importlib.util.find_spec("tidings.engine.embedded") is None:
        raise SystemExit("--redis-url embedded: this tidings has no tidings.engine.embedded module")
    from tidings.engine import embedded

    status = getattr(embedded, "server_status", None)
    was_running = bool(status(EMBEDDED_DIR)["alive"]) if status is not None else True
    url = embedded.ensure_server(EMBEDDED_DIR)
    stop = getattr(embedded, "stop_server", None)
    if was_running or stop is None:
        return url, None
    return url, lambda: stop(EMBEDDED_DIR)


def loop_factory(choice: str) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SystemExit("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop, f"uvloop {metadata.version('uvloop')}"
    return None, "asyncio"


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, check=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty.strip() else "")


def machine_info(loop_name: str, server: dict[str, Any], url: str) -> dict[str, Any]:
    import hiredis
    import redis

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "loop": loop_name,
        "redis_py": redis.__version__,
        "hiredis": getattr(hiredis, "__version__", "installed"),
        "server": url if not url.startswith("unix://") else "embedded (unix socket)",
        **server,
        "tidings_git": git_revision(),
        "load_avg_at_start": load_average(),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


async def run(args: argparse.Namespace, url: str, loop_name: str) -> dict[str, Any]:
    plan = Plan.quick(args.rounds) if args.quick else Plan.full(args.rounds)
    prefix = f"tbench-{os.getpid()}-{os.urandom(3).hex()}"
    bench = Bench(url, plan, prefix)
    await bench.setup()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    try:
        machine = machine_info(loop_name, await bench.server_info(), url)
        log(f"prefix {prefix}, loop {loop_name}, plan {plan}")
        for name in args.only:
            log(f"== {name}")
            t0 = time.perf_counter()
            results[name] = await MEASUREMENTS[name](bench)
            log(f"== {name} done in {time.perf_counter() - t0:.1f}s")
    finally:
        await bench.close()
    return {
        "machine": machine,
        "config": {"quick": args.quick, "rounds": plan.rounds, "e2e_rounds": plan.e2e_rounds,
                   "key_prefix": prefix, "statistic": "median across rounds; rounds "
                   "alternate which side runs first; ratio = tidings median / raw median "
                   "(ratio_paired_median = median of per-round ratios)"},
        "results": results,
        "targets": evaluate_targets(results),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "load_avg_at_end": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url, stop_server = resolve_url(args.redis_url)
    factory, loop_name = loop_factory(args.loop)
    coro: Coroutine[Any, Any, dict[str, Any]] = run(args, url, loop_name)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            report = runner.run(coro)
    finally:
        if stop_server is not None:
            stop_server()
    text = json.dumps(report, indent=2)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n")
    missed = [k for k, v in report["targets"].items() if v["status"] == "not met"]
    log(f"wrote {args.output}; targets not met: {', '.join(missed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
