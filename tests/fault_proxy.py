"""An asyncio TCP proxy in front of a Redis server that a test can partition.

``partition()`` models a network partition between the server and the rest of its
deployment (its replicas and the sentinels), not a crash: the bytes of those connections
are dropped in both directions while their sockets stay open (no reset, as when packets
are lost), and new ones are blackholed the same way. Client connections go on working, so
the server's clients can keep writing to it: the split-brain case. A connection is told
apart by what it sends (replicas send ``REPLCONF``, sentinels name themselves
``sentinel-...``); until it says, it counts as a client. ``heal()`` closes the cut
connections (both sides reconnect, as after a long partition) and forwards again.

``cut()`` models the server going away for everyone (the bridge tests put the proxy in
front of a broker): every connection is closed and new ones are refused until
``restore()``. ``port`` may be chosen up front (a Kafka broker must advertise it).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

CLUSTER_MARKS = (b"REPLCONF", b"PSYNC", b"sentinel-")


@dataclass(eq=False)
class _Link:
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    cluster: bool = False  # a replica's or a sentinel's connection


class FaultProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1", port: int = 0,
                 unix: str | None = None) -> None:
        self.target = (host, target_port)
        self.unix = unix  # forward to this Unix socket instead (the embedded server's)
        self.port = port
        self.partitioned = False
        self.down = False
        self.cuts = 0  # connections closed or refused while down
        self.refused = asyncio.Event()  # set at each connection refused while down
        self.dropped = 0  # chunks dropped while partitioned
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.cuts += 1
            self.refused.set()
            writer.close()
            return
        try:
            if self.unix is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(self.unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        link = _Link([writer, up_writer])
        self._links.add(link)
        try:
            await asyncio.gather(self._pump(link, reader, up_writer, True),
                                 self._pump(link, up_reader, writer, False))
        finally:
            self._links.discard(link)
            for w in link.writers:
                w.close()

    async def _pump(self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    from_client: bool) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await src.read(65536):
                if from_client and not link.cluster:
                    link.cluster = any(mark in chunk for mark in CLUSTER_MARKS)
                if self.partitioned and link.cluster:
                    self.dropped += 1
                    continue
                dst.write(chunk)
                await dst.drain()
        dst.close()

    def partition(self) -> None:
        self.partitioned = True

    def heal(self) -> None:
        for link in [lk for lk in self._links if lk.cluster]:
            for w in link.writers:
                w.close()
        self.partitioned = False

    def cut(self) -> None:
        self.down = True
        for link in list(self._links):
            self.cuts += 1
            for w in link.writers:
                w.close()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            for w in link.writers:
                w.close()
