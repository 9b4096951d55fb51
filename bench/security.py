"""``python -m bench.security``: what message encryption costs a producer and a worker.

1 KiB payloads (a notification body), published in batches of 500 and drained by one
worker, with the queue plain and with ``encryption="aes-256-gcm"``, in the same process
against the same server, rounds in alternating order on fresh keys. Reported: messages a
second of each, their ratios (target: encrypted at least 0.8x of plain), and the raw cost
of the cipher alone (AESGCM seal and open of the same payloads, no server), to show what
of the difference is the cipher. Written to ``bench/results/security.json``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from typing import Any

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tidings import Tidings
from tidings.security.encryption import Encryption
from tidings.security.keyring import Keyring, new_key

from .drain import count_to, drop_keys
from .stats import median, ratio, rounded, rounds_main

BATCH = 500
CONCURRENCY = 256
VARIANTS = ("plain", "encrypted")


def body(i: int) -> dict[str, Any]:
    """About 1 KiB once encoded: an address, a subject and a text body."""
    return {"to": f"user{i}@example.com", "subject": "Your code", "text": "x" * 960, "n": i}


async def run(url: str, variant: str, n: int) -> tuple[float, float]:
    """(published per second, drained per second) of ``n`` messages."""
    app = Tidings(url, key_prefix=f"tbench-sec-{uuid.uuid4().hex[:10]}")
    options = {"encryption": "aes-256-gcm"} if variant == "encrypted" else {}
    queue = app.queue("mail", **options)
    if options:
        app.extension(Encryption).use(Keyring({"k1": new_key()}, "k1"))
    done = count_to(queue, n, CONCURRENCY)
    async with app:
        try:
            payloads = [body(i) for i in range(n)]
            started = time.perf_counter()
            for i in range(0, n, BATCH):
                await queue.publish_many(payloads[i:i + BATCH])
            published = n / (time.perf_counter() - started)
            worker = app.worker(concurrency=CONCURRENCY)
            started = time.perf_counter()
            task = asyncio.create_task(worker.run())
            await asyncio.wait_for(done.wait(), 300)
            drained = n / (time.perf_counter() - started)
            worker.stop()
            await task
        finally:
            await drop_keys(app)
    return published, drained


def cipher_only(n: int) -> dict[str, float]:
    """Microseconds per message of msgpack + AESGCM seal, and of open + unpack, alone."""
    cipher, nonce, aad = AESGCM(new_key()), os.urandom(12), b"mail|id|headers"
    plain = [msgpack.packb(body(i)) for i in range(n)]
    started = time.perf_counter()
    sealed = [cipher.encrypt(nonce, p, aad) for p in plain]
    seal = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for s in sealed:
        msgpack.unpackb(cipher.decrypt(nonce, s, aad))
    opened = (time.perf_counter() - started) / n
    return {"seal_us": round(seal * 1e6, 2), "open_us": round(opened * 1e6, 2)}


async def measure(url: str, n: int, rounds: int) -> dict[str, Any]:
    per_round: list[dict[str, tuple[float, float]]] = []
    for r in range(rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        figures = {}
        for variant in order:
            figures[variant] = await run(url, variant, n)
            print(f"round {r + 1}/{rounds} {variant}: publish {figures[variant][0]:,.0f}/s, "
                  f"drain {figures[variant][1]:,.0f}/s", file=sys.stderr, flush=True)
        per_round.append(figures)
    result: dict[str, Any] = {"messages": n, "rounds": rounds, "payload_bytes": 1024,
                              "batch": BATCH, "concurrency": CONCURRENCY, "target": 0.8}
    for index, what in enumerate(("publish", "drain")):
        medians = {v: median([f[v][index] for f in per_round]) for v in VARIANTS}
        result[f"{what}_msg_per_s"] = {v: rounded(m, 0) for v, m in medians.items()}
        result[f"{what}_ratio"] = rounded(ratio(medians["encrypted"], medians["plain"]))
    result["cipher_only"] = cipher_only(min(n, 20_000))
    return result


def main(argv: list[str] | None = None) -> None:
    rounds_main("python -m bench.security", __doc__ or "", measure, "security.json", argv)


if __name__ == "__main__":
    main()
