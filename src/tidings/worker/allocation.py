"""Weighted lane allocation: how many of a fetch's free slots go to each priority lane."""

from __future__ import annotations


class LaneAllocator:
    """Splits fetch capacity between the lanes in proportion to their weights.

    Rounding each fetch on its own would favour one lane forever when fetches are small
    (a worker with 1 free slot), so fractional shares are carried over between fetches:
    the long-run split is exact at any fetch size. Unused quota (a lane without traffic)
    is given to the other lanes by the fetch script.
    """

    __slots__ = ("_credit", "_total", "weights")

    def __init__(self, weights: tuple[int, int, int]) -> None:
        self.weights = weights
        self._total = sum(weights)
        self._credit = [0.0, 0.0, 0.0]

    def set_weights(self, weights: tuple[int, int, int]) -> None:
        if weights != self.weights:
            self.weights = weights
            self._total = sum(weights)
            self._credit = [0.0, 0.0, 0.0]

    def split(self, slots: int) -> list[int]:
        credit = self._credit
        quotas = [0, 0, 0]
        for i in range(3):
            credit[i] += slots * self.weights[i] / self._total
            quotas[i] = int(credit[i])
        rest = slots - quotas[0] - quotas[1] - quotas[2]
        if rest:
            by_remainder = sorted(range(3), key=lambda i: quotas[i] - credit[i])
            for i in by_remainder[:rest]:
                quotas[i] += 1
        for i in range(3):
            credit[i] -= quotas[i]
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
