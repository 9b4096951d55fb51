"""``python -m bench.failover``: N kill -9 failovers of a Sentinel-managed primary under
load, min / median / max of each measure, printed as JSON (and written to
bench/results/failover.json).

Each run is the failover test's (tests/failover_run.py, used by
tests/test_sentinel_failover.py): a fresh primary, two replicas and three sentinels
(``down-after-milliseconds 1000``, ``failover-timeout 5000``), two ``tidings worker``
processes, two producers (``replicated`` and ``memory`` queues) at ~300 publishes/s each,
SIGKILL of the primary mid-stream. Needs ``redis-server`` (or
``TIDINGS_TEST_SENTINEL_SERVER``); about 15 s a run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .stats import RESULTS, median, write_result

TESTS = Path(__file__).resolve().parent.parent / "tests"
MEASURES = ("promoted_s", "publish_gap_replicated_s", "publish_gap_memory_s",
            "consuming_again_s", "lost_replicated", "lost_memory", "processed_twice",
            "confirmed_replicated", "confirmed_memory")


async def measure(runs: int) -> dict[str, Any]:
    sys.path.insert(0, str(TESTS))  # the test's machinery: deployment, workers, producers
    from failover_run import failover_once
    from fault_helpers import WorkerProcs

    results = []
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="tdfo", dir="/tmp") as tmp:
            workdir = Path(tmp) / "sentinel"
            workdir.mkdir()
            procs = WorkerProcs(Path(tmp))
            try:
                run = await failover_once(workdir, procs)
            finally:
                procs.kill_all()
        print(f"run {i + 1}/{runs}: {run}", file=sys.stderr, flush=True)
        results.append(run)
    summary = {}
    for name in MEASURES:
        values = sorted(r[name] for r in results)
        summary[name] = {"min": round(values[0], 2), "median": round(median(values), 2),
                         "max": round(values[-1], 2)}
    return {"benchmark": "failover", "runs": runs, "summary": summary,
            "all_workers_rode_it_out": all(r["workers_alive_and_reconnected"] for r in results),
            "per_run": [{k: (round(v, 2) if isinstance(v, float) else v)
                         for k, v in r.items()} for r in results]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--output", default=str(RESULTS / "failover.json"))
    args = parser.parse_args(argv)
    started = time.time()
    write_result(asyncio.run(measure(args.runs)), started, args.output)


if __name__ == "__main__":
    main()
