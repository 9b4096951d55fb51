"""Who owns which partition of an ordered queue: the same answer in every worker."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence


def assign(members: Sequence[str], partitions: int) -> dict[str, set[int]]:
    """Partition owners: each partition's highest-ranked member (by a stable hash of
    member and partition) that still has room under ``ceil(partitions / members)``."""
    out: dict[str, set[int]] = {m: set() for m in members}
    if not members:
        return out
    room = math.ceil(partitions / len(members))
    for p in range(partitions):
        ranked = sorted(members, reverse=True, key=lambda m: hashlib.blake2b(
            f"{m}/{p}".encode(), digest_size=8).digest())
        owner = next(m for m in ranked if len(out[m]) < room)
        out[owner].add(p)
    return out
