"""A worker process for one peer: ``python -m bench.peers.worker MODE [JSON]``.

The peer is named by $BENCH_PEER and its setup by $BENCH_REDIS_URL, $BENCH_NS and
$BENCH_CONCURRENCY (see base.Ctx). Modes:

- ``drain``: print ``ready``, wait for ``go`` on stdin, start the library's worker and
  time until the handler has seen ``n`` jobs; print ``{"elapsed_s": ...}``.
- ``e2e``: start the worker at once; a job with ``i < 0`` is the warm-up, answered with
  ``warm``; for the others record handler start minus the ``ts`` the publisher put in
  the payload (the monotonic clock is shared by every process); after ``n`` jobs print
  the latency summary.
- ``first``: start the worker; its first handler call writes the start-up mark.

Lines go to the original stdout; the library's own output is sent to stderr so it cannot
break the protocol. The process ends with ``os._exit`` once it has answered: the library
is not asked to shut down cleanly, the driver stops and cleans up after it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, TextIO

from ..stats import latency_summary
from .base import Body, Ctx, exit_with_parent, load_peer, mark_started


class Recorder:
    """Counts the jobs a worker handled and, for ``e2e``, their latencies."""

    def __init__(self, mode: str, n: int, skip: int, out: TextIO) -> None:
        self.mode, self.n, self.skip, self.out = mode, n, skip, out
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.count = 0
        self.latencies: list[float] = []
        self.started = 0.0
        self.finished = 0.0

    def say(self, line: str) -> None:
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def handle(self, body: Body) -> None:
        """The no-op job: count it (and its latency); called by every peer's handler."""
        now = time.monotonic()
        i = body.get("i", 0)
        if self.mode == "e2e" and i < 0:
            self.say("warm")
            return
        with self.lock:
            if self.mode == "e2e" and i >= self.skip:
                self.latencies.append(now - body["ts"])
            self.count += 1
            if self.count == self.n:
                self.finished = now
                self.done.set()

    def result(self) -> dict[str, Any]:
        if self.mode == "drain":
            elapsed = self.finished - self.started
            return {"elapsed_s": elapsed, "msg_per_s": self.n / elapsed}
        return {**latency_summary(self.latencies), "received": self.count}

    def answer_when_done(self) -> None:
        self.done.wait()
        self.say(json.dumps(self.result()))
        os._exit(0)


def protocol_stdout() -> TextIO:
    """A private copy of stdout for protocol lines; fd 1 then points at stderr."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def main(argv: list[str]) -> None:
    mode = argv[0]
    spec: dict[str, Any] = json.loads(argv[1]) if len(argv) > 1 else {}
    out = protocol_stdout()
    exit_with_parent()
    peer = load_peer(os.environ["BENCH_PEER"])(Ctx.from_env())
    if mode == "first":
        peer.serve(lambda body: mark_started())
        return
    rec = Recorder(mode, int(spec["n"]), int(spec.get("skip", 0)), out)
    threading.Thread(target=rec.answer_when_done, daemon=True).start()
    rec.say("ready")
    if mode == "drain" and sys.stdin.readline().strip() != "go":
        os._exit(1)
    rec.started = time.monotonic()
    peer.serve(rec.handle)
    rec.done.wait()  # a worker that returns early still answers


if __name__ == "__main__":
    main(sys.argv[1:])
