"""kill -9 of the Sentinel-managed primary under steady load, with real worker processes.

A primary, two replicas and three sentinels (sentinels.py); two ``tidings worker``
processes (tests/apps/fault_app.py), one per queue, that record every message they
finish on a separate server (the ledger) the failover does not touch; two producers in
this process publishing continuously, each publish retried with its idempotency key until
it is confirmed. The primary is killed with SIGKILL mid-stream. What must hold:

* ``durability="replicated"`` (WAIT 1): every confirmed publish is processed, none lost;
* ``durability="memory"``: a confirmed publish the primary had not yet sent to a replica
  can be lost; the test counts them (and reports, does not require, zero);
* duplicates (at least once: a handler that finished but whose ack died with the primary
  runs again after the visibility timeout) are counted and reported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from failover_run import failover_once
from fault_helpers import WorkerProcs

# Starts its own servers: the CI pass against another Redis would repeat it as is.
pytestmark = pytest.mark.own_servers


@pytest.mark.slow
async def test_kill_9_of_the_primary_loses_no_replicated_publish(
        tmp_path: Path, workers: WorkerProcs, report: Callable[[str], None]) -> None:
    workdir = tmp_path / "sentinel"
    workdir.mkdir()
    run = await failover_once(workdir, workers)
    assert run["workers_alive_and_reconnected"], workers.all_logs()  # rode out the failover
    report(f"sentinel failover (kill -9 of the primary): promoted after "
           f"{run['promoted_s']:.1f}s; publishing down for "
           f"{run['publish_gap_replicated_s']:.1f}s (replicated) / "
           f"{run['publish_gap_memory_s']:.1f}s (memory); workers consuming new "
           f"messages {run['consuming_again_s']:.1f}s after the kill; confirmed "
           f"{run['confirmed_replicated']} replicated + {run['confirmed_memory']} memory; "
           f"lost: {run['lost_replicated']} replicated, {run['lost_memory']} memory; "
           f"processed twice: {run['processed_twice']}; publish retries: "
           f"{run['publish_retries']}")
    assert run["lost_replicated"] == 0, "a confirmed replicated publish was lost"
