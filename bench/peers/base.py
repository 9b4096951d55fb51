"""What every Python peer provides, and the process plumbing the driver and workers share.

A peer is one library doing the benchmark's job: publish a small payload, and in a worker
process hand each payload to a no-op handler supplied by the harness, acking after it.
The harness owns every measurement loop (bench.peers.driver, bench.peers.worker), so the
peers differ only in the library calls.

Nothing here imports a peer library: the smoke test loads this module in the project's
normal environment.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

Body = dict[str, Any]
Handler = Callable[[Body], None]

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = Path(__file__).resolve().parent / "node"
STOP_GRACE_S = 5.0

# Python peers: name -> "module:class". BullMQ runs in Node (node/bullmq.mjs) and speaks
# the same line protocol, so it has no entry here.
PYTHON_PEERS = {
    "tidings": "bench.peers.tidings_peer:TidingsPeer",
    "raw": "bench.peers.raw:RawPeer",
    "dramatiq": "bench.peers.dramatiq_peer:DramatiqPeer",
    "saq": "bench.peers.saq_peer:SaqPeer",
    "celery": "bench.peers.celery_peer:CeleryPeer",
}


@dataclass(frozen=True, slots=True)
class Ctx:
    """Where a peer works: the server, its own key namespace, the worker concurrency."""

    url: str
    ns: str
    concurrency: int

    def env(self) -> dict[str, str]:
        """The environment a worker started by a library's own CLI reads its setup from."""
        return {"BENCH_REDIS_URL": self.url, "BENCH_NS": self.ns,
                "BENCH_CONCURRENCY": str(self.concurrency)}

    @classmethod
    def from_env(cls) -> Ctx:
        return cls(os.environ["BENCH_REDIS_URL"], os.environ["BENCH_NS"],
                   int(os.environ["BENCH_CONCURRENCY"]))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Peer:
    """One library's side of the job. Subclasses override the library calls."""

    name: ClassVar[str]
    packages: ClassVar[tuple[str, ...]] = ()
    # What the peer does (settings, guarantees); printed in the JSON beside the figures.
    setup: ClassVar[str] = ""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx

    async def open(self) -> None:
        """Connect the producer side."""

    async def close(self) -> None:
        """Release the producer side."""

    async def publish(self, body: Body) -> None:
        raise NotImplementedError

    async def publish_batch(self, bodies: list[Body]) -> None:
        """The library's bulk publish, or the closest it has."""
        raise NotImplementedError

    def serve(self, handler: Handler) -> None:
        """Run the library's worker in this process, calling ``handler`` for every job;
        returns only if the worker stops by itself (the harness exits the process)."""
        raise NotImplementedError

    def startup_argv(self) -> list[str]:
        """The command that starts a fresh worker the way an operator would; it calls
        :func:`mark_started` from its handler."""
        return [sys.executable, "-m", "bench.peers.worker", "first"]

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {p: metadata.version(p) for p in cls.packages}


def load_peer(name: str) -> type[Peer]:
    """The Peer class of a Python peer (imports its library)."""
    module, _, attr = PYTHON_PEERS[name].partition(":")
    cls: type[Peer] = getattr(importlib.import_module(module), attr)
    return cls


def mark_started() -> None:
    """Record, once, when the first handler of a start-up measurement ran (monotonic clock,
    which every process on the machine shares), in the file the driver waits on."""
    path = os.environ.get("BENCH_MARK_FILE")
    if not path or os.path.exists(path):
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(repr(time.monotonic()))
    os.replace(tmp, path)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process the harness starts: the repo importable, so a
    library's CLI finds ``bench.peers.apps``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def spawn(argv: list[str], env: dict[str, str], *, pipes: bool = True) -> subprocess.Popen[str]:
    """Start a process in its own process group (its group id is its PID), so stopping it
    also stops any children it forked, and nothing else. With ``pipes`` we talk to it on
    stdin/stdout; without, its output joins ours."""
    return subprocess.Popen(
        argv, cwd=REPO, env=env, text=True, start_new_session=True,
        stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
        stdout=subprocess.PIPE if pipes else None, stderr=None)


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    # A forked child may outlive its leader; the group id is still ours to signal.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.stdin is not None:
        proc.stdin.close()


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run an async worker on uvloop when it is installed (every async peer alike)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def exit_with_parent(poll_s: float = 0.5) -> None:
    """End this process when the one that started it is gone, so a killed orchestrator or
    driver leaves no worker behind."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
