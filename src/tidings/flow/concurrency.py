"""A fleet-wide cap on concurrent work per name, held as leases in Redis.

A slot is a member of a sorted set (the holder's token) scored by when its lease runs out,
on the server's clock. Acquiring first drops expired members, so a worker that dies holding
slots only keeps them until its leases lapse; live holders :meth:`~ConcurrencyLimit.renew`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from uuid import uuid4

from redis.asyncio import Redis

from ..core.errors import ValidationError
from ..engine.broker import text
from ..engine.scripts import Script
from ._keys import hash_tagged

_ACQUIRE = Script("concurrency_acquire")
_RENEW = Script("concurrency_renew")
_RELEASE = Script("concurrency_release")


class ConcurrencyLimit:
    """At most ``limit`` slots held at once per name, fleet-wide; each lease lasts ``lease`` s.

    Holders must :meth:`renew` well within ``lease`` (say every third of it) for as long as
    the work runs; a slot not renewed is handed to someone else once its lease runs out.
    """

    def __init__(
        self,
        client: Redis,
        limit: int,
        lease: float = 30.0,
        *,
        prefix: str = "tidings",
    ) -> None:
        if limit < 1:
            raise ValidationError("limit", f"must be at least 1, got {limit!r}")
        if not (lease > 0 and math.isfinite(lease)):
            raise ValidationError("lease", f"must be a positive number of seconds, got {lease!r}")
        self.client = client
        self.limit = limit
        self.lease = lease
        self.prefix = prefix

    @property
    def _lease_ms(self) -> int:
        return max(1, math.ceil(self.lease * 1000))

    def key(self, name: str) -> str:
        return hash_tagged(self.prefix, "concurrency", name)

    async def acquire(self, name: str, n: int = 1) -> list[str]:
        """Take up to ``n`` slots; returns one holder token per slot granted (maybe none)."""
        if n < 1:
            raise ValidationError("n", f"must be at least 1, got {n!r}")
        candidates = [uuid4().hex for _ in range(n)]
        granted = await _ACQUIRE(
            self.client, [self.key(name)], [self.limit, self._lease_ms, *candidates]
        )
        return [text(token) for token in granted]

    async def renew(self, name: str, tokens: Sequence[str]) -> list[str]:
        """Extend the leases of ``tokens`` by ``lease`` from now; returns the tokens lost.

        A lost token's lease had already run out (or it was released): its slot may be
        someone else's now, so the work it guarded is no longer covered by the cap.
        """
        if not tokens:
            return []
        lost = await _RENEW(self.client, [self.key(name)], [self._lease_ms, *tokens])
        return [text(token) for token in lost]

    async def release(self, name: str, tokens: Sequence[str]) -> int:
        """Give slots back; returns how many were still held (expired ones are not)."""
        if not tokens:
            return 0
        return int(await _RELEASE(self.client, [self.key(name)], list(tokens)))

    @asynccontextmanager
    async def hold(self, name: str, n: int = 1) -> AsyncIterator[list[str]]:
        """Acquire up to ``n`` slots for the ``async with`` body and release them after.

        Yields the granted tokens (possibly none: the body decides what to do then). The
        body renews them itself if it may outlast the lease.
        """
        tokens = await self.acquire(name, n)
        try:
            yield tokens
        finally:
            await self.release(name, tokens)

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimit(limit={self.limit!r}, lease={self.lease!r}, prefix={self.prefix!r})"
        )
