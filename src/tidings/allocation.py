"""Weighted lane allocation: how many of a fetch's free slots go to each priority lane."""

from __future__ import annotations


class LaneAllocator:
    """Splits fetch capacity between the lanes in proportion to their weights.

    A plain proportional split rounds small fetches (a worker with 1 free slot) in favour of
    the high lane forever; the remainder is therefore handed out by smooth weighted
    round-robin, whose running credits make the long-run shares exact at any fetch size.
    Unused quota (a lane without traffic) is given to the other lanes by the fetch script.
    """

    __slots__ = ("_credit", "_total", "weights")

    def __init__(self, weights: tuple[int, int, int]) -> None:
        self.weights = weights
        self._total = sum(weights)
        self._credit = [0, 0, 0]

    def set_weights(self, weights: tuple[int, int, int]) -> None:
        if weights != self.weights:
            self.weights = weights
            self._total = sum(weights)
            self._credit = [0, 0, 0]

    def split(self, slots: int) -> list[int]:
        total = self._total
        quotas = [slots * w // total for w in self.weights]
        credit = self._credit
        for _ in range(slots - sum(quotas)):
            for i in range(3):
                credit[i] += self.weights[i]
            best = max(range(3), key=credit.__getitem__)
            credit[best] -= total
            quotas[best] += 1
        return quotas


def parse_weights(value: bytes | str | None) -> tuple[int, int, int] | None:
    """Weights as stored in the queue's config hash ("6,3,1"); None if absent or bad."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        return None
    if len(parts) != 3 or min(parts) < 0 or sum(parts) == 0:
        return None
    return parts[0], parts[1], parts[2]
