"""``python -m bench.peers.driver PEER``: one Python peer's measurements, on command.

The orchestrator (bench.peers.__main__) starts one driver per peer and sends it one JSON
line per measurement round; the driver answers with one JSON line of figures. Publishing
runs here; every worker is a fresh process (bench.peers.worker, or the library's CLI for
start-up), started and stopped by PID. node/bullmq.mjs speaks the same protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ..job import payload
from ..stats import latency_summary, median
from .base import Ctx, Peer, child_env, exit_with_parent, load_peer, spawn, stop
from .worker import protocol_stdout

Metrics = dict[str, float]
WORKER_TIMEOUT_S = 300.0
WARM_TIMEOUT_S = 60.0
MARK_POLL_S = 0.002


def ctx_of(cmd: dict[str, Any]) -> Ctx:
    return Ctx(cmd["url"], cmd["ns"], int(cmd["concurrency"]))


async def single_publish(cls: type[Peer], cmd: dict[str, Any]) -> Metrics:
    """Sequentially awaited publishes; per-call latency and overall rate."""
    peer = cls(ctx_of(cmd))
    await peer.open()
    try:
        for i in range(int(cmd.get("warmup", 0))):
            await peer.publish(payload(-1 - i))
        n, lat, clock = int(cmd["n"]), [], time.perf_counter
        started = clock()
        for i in range(n):
            t = clock()
            await peer.publish(payload(i))
            lat.append(clock() - t)
        elapsed = clock() - started
    finally:
        await peer.close()
    return {"msg_per_s": n / elapsed, **latency_summary(lat)}


async def publish_all(peer: Peer, n: int, chunk: int) -> float:
    """Publish ``n`` jobs with the peer's bulk call, ``chunk`` at a time; seconds taken."""
    started = time.perf_counter()
    for start in range(0, n, chunk):
        await peer.publish_batch([payload(i) for i in range(start, min(n, start + chunk))])
    return time.perf_counter() - started


async def batch_publish(cls: type[Peer], cmd: dict[str, Any]) -> Metrics:
    peer = cls(ctx_of(cmd))
    await peer.open()
    try:
        n = int(cmd["n"])
        elapsed = await publish_all(peer, n, int(cmd["chunk"]))
    finally:
        await peer.close()
    return {"msg_per_s": n / elapsed}


class WorkerProcess:
    """A bench.peers.worker process and its answer lines."""

    def __init__(self, name: str, ctx: Ctx, mode: str, spec: dict[str, Any]) -> None:
        self.proc = spawn([sys.executable, "-m", "bench.peers.worker", mode, json.dumps(spec)],
                          child_env({**ctx.env(), "BENCH_PEER": name}))

    async def line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            text = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline),
                                          timeout)
        except TimeoutError:
            stop(self.proc)
            raise RuntimeError(f"worker gave no answer within {timeout:.0f}s") from None
        if not text:
            raise RuntimeError(f"worker exited (status {self.proc.wait()}) without answering")
        return text.strip()

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        stop(self.proc)


async def drain(cls: type[Peer], cmd: dict[str, Any]) -> Metrics:
    """A backlog of ``n`` jobs, then one fresh worker process timed from start to the
    ``n``-th handler call (its imports and set-up are done before the clock starts)."""
    ctx, n = ctx_of(cmd), int(cmd["n"])
    peer = cls(ctx)
    await peer.open()
    try:
        await publish_all(peer, n, int(cmd["chunk"]))
    finally:
        await peer.close()
    worker = WorkerProcess(cls.name, ctx, "drain", {"n": n})
    try:
        if (await worker.line(WARM_TIMEOUT_S)) != "ready":
            raise RuntimeError("worker did not say ready")
        worker.send("go")
        result: Metrics = json.loads(await worker.line(WORKER_TIMEOUT_S))
    finally:
        worker.stop()
    return result


async def e2e_latency(cls: type[Peer], cmd: dict[str, Any]) -> Metrics:
    """Jobs offered at a fixed rate to a running worker process; the handler records
    its start minus the publish time carried in the payload."""
    ctx, rate = ctx_of(cmd), float(cmd["rate"])
    n, skip = int(rate * float(cmd["seconds"])), int(cmd["skip"])
    peer = cls(ctx)
    await peer.open()
    worker = WorkerProcess(cls.name, ctx, "e2e", {"n": n, "skip": skip})
    try:
        await worker.line(WARM_TIMEOUT_S)  # ready
        await peer.publish({"i": -1, "ts": time.monotonic()})
        if (await worker.line(WARM_TIMEOUT_S)) != "warm":
            raise RuntimeError("worker did not handle the warm-up job")
        clock = time.monotonic
        start = clock()
        for i in range(n):
            wait = start + i / rate - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            await peer.publish({"i": i, "ts": clock(), **payload(i)})
        result: Metrics = json.loads(await worker.line(WORKER_TIMEOUT_S))
    finally:
        worker.stop()
        await peer.close()
    return result


async def startup(cls: type[Peer], cmd: dict[str, Any]) -> Metrics:
    """Seconds from spawning a fresh worker (the library's own CLI where it has one) with
    one job waiting to its handler running; the median of ``spawns`` spawns."""
    times = []
    for k in range(int(cmd["spawns"])):
        ctx = Ctx(cmd["url"], f"{cmd['ns']}-{k}", int(cmd["concurrency"]))
        times.append(await spawn_once(cls, ctx))
    return {"seconds": median(times), "min_s": min(times), "max_s": max(times)}


async def spawn_once(cls: type[Peer], ctx: Ctx) -> float:
    peer = cls(ctx)
    await peer.open()
    try:
        await peer.publish(payload(0))
    finally:
        await peer.close()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        mark = Path(tmp) / "first"
        env = child_env({**ctx.env(), "BENCH_PEER": cls.name, "BENCH_MARK_FILE": str(mark)})
        started = time.monotonic()
        proc = spawn(peer.startup_argv(), env, pipes=False)
        try:
            while not mark.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"start-up worker exited with status {proc.returncode}")
                if time.monotonic() - started > WARM_TIMEOUT_S:
                    raise RuntimeError(f"no handler ran within {WARM_TIMEOUT_S:.0f}s")
                await asyncio.sleep(MARK_POLL_S)
            return float(mark.read_text()) - started
        finally:
            stop(proc)


OPS: dict[str, Callable[[type[Peer], dict[str, Any]], Coroutine[Any, Any, Metrics]]] = {
    "single_publish": single_publish,
    "batch_publish": batch_publish,
    "drain": drain,
    "e2e_latency": e2e_latency,
    "startup": startup,
}


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str]) -> None:
    out = protocol_stdout()
    exit_with_parent()
    cls = load_peer(argv[0])
    out.write(json.dumps({"ready": True, "versions": cls.versions(), "setup": cls.setup,
                          "pid": os.getpid()}) + "\n")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                reply: dict[str, Any] = {"ok": True,
                                         "metrics": runner.run(OPS[cmd["op"]](cls, cmd))}
            except Exception as exc:  # the orchestrator reports it and goes on
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
