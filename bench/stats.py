"""Small statistics helpers: medians across rounds and latency percentiles."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"  # where each benchmark writes its JSON


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (mean of the two middle values for an even count)."""
    if not values:
        raise ValueError("median of an empty sequence")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already *sorted* values, linearly interpolated."""
    if not ordered:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max of latency samples given in seconds, reported in milliseconds."""
    ordered = sorted(samples_s)
    return {
        "p50_ms": percentile(ordered, 50) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def rounds_main(prog: str, doc: str,
                measure: Callable[[str, int, int], Coroutine[Any, Any, dict[str, Any]]],
                output: str, argv: list[str] | None = None) -> None:
    """The command line of a ``measure(url, messages, rounds)`` benchmark: options, uvloop,
    the machine's figures, the JSON printed and written to ``bench/results/<output>``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get(
        "TIDINGS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 3 rounds")
    parser.add_argument("--output", default=str(RESULTS / output))
    args = parser.parse_args(argv)
    n, rounds = (2_000, 3) if args.quick else (args.messages, args.rounds)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    started = time.time()
    write_result(asyncio.run(measure(args.redis_url, n, rounds)), started, args.output)


def write_result(result: dict[str, Any], started: float, output: str | Path) -> None:
    """Add the machine's figures to ``result``, print it as JSON and write it to ``output``
    (``started``: the run's ``time.time()`` at its start)."""
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                         "load_average_at_start": os.getloadavg()[0],
                         "seconds": round(time.time() - started, 1)}
    text = json.dumps(result, indent=2)
    print(text)
    with open(output, "w") as out:
        out.write(text + "\n")


def lazy_app(build: Callable[[], Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` giving ``module:app`` (what ``tidings worker`` loads in the
    benchmark's worker processes), built by ``build`` on first access only: the driver
    process imports the module too and must not build it."""
    built: list[Any] = []

    def __getattr__(name: str) -> Any:
        if name != "app":
            raise AttributeError(name)
        if not built:
            built.append(build())
        return built[0]

    return __getattr__
