"""Pure functions that turn per-round figures into medians, ratios and a Markdown table.

Nothing here touches a server or imports a peer library (tests/test_bench_peers.py runs
these in the project's normal environment).
"""

from __future__ import annotations

from typing import Any

from ..stats import median, ratio, rounded

Metrics = dict[str, float]

# The figures each measurement reports, and whether more is better.
METRICS: dict[str, tuple[str, ...]] = {
    "single_publish": ("msg_per_s", "p50_ms", "p99_ms"),
    "batch_publish": ("msg_per_s",),
    "drain": ("msg_per_s",),
    "e2e_latency": ("p50_ms", "p99_ms"),
    "startup": ("seconds",),
}
HIGHER_IS_BETTER = frozenset({"msg_per_s"})
FLOOR = "raw"
SUBJECT = "tidings"


def medians(rounds: list[Metrics]) -> Metrics:
    """The median of every figure present in all ``rounds``."""
    if not rounds:
        return {}
    keys = [k for k in rounds[0] if all(k in r for r in rounds)]
    return {k: median([r[k] for r in rounds]) for k in keys}


def ratios(values: dict[str, Metrics], base: str, metrics: tuple[str, ...]) -> dict[str, Any]:
    """``value / base's value`` for every peer and metric (None where either is missing)."""
    ref = values.get(base, {})
    out: dict[str, Any] = {}
    for peer, figures in values.items():
        out[peer] = {m: rounded(ratio(figures[m], ref[m])) if m in figures and m in ref
                     else None for m in metrics}
    return out


def summarize(measurement: str, rounds: dict[str, list[Metrics]],
              errors: dict[str, list[str]]) -> dict[str, Any]:
    """One measurement's JSON: medians and rounds per peer, ratios to the raw floor, and
    tidings' figure divided by each peer's (above 1 is more for throughput, below 1 is
    less for latency and start-up)."""
    metrics = METRICS[measurement]
    meds = {peer: medians(r) for peer, r in rounds.items()}
    peers: dict[str, Any] = {}
    for peer, r in rounds.items():
        peers[peer] = {"median": {k: rounded(v) for k, v in meds[peer].items()},
                       "rounds": [{k: rounded(v) for k, v in m.items()} for m in r]}
        if errors.get(peer):
            peers[peer]["errors"] = errors[peer]
    vs_floor = ratios(meds, FLOOR, metrics)
    tidings = meds.get(SUBJECT, {})
    vs_peer = {peer: {m: rounded(ratio(tidings[m], f[m])) if m in tidings and m in f
                      and f[m] else None for m in metrics}
               for peer, f in meds.items() if peer != SUBJECT}
    return {"metrics": list(metrics), "peers": peers, "ratio_to_raw": vs_floor,
            "tidings_ratio_to_peer": vs_peer}


def fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    if metric == "msg_per_s":
        return f"{value:,.0f}"
    return f"{value:.3g}" if metric == "seconds" else f"{value:.2f}"


def markdown_table(results: dict[str, Any], peers: list[str]) -> str:
    """A Markdown table, one row per figure, one column per peer: the median, and below
    it (for peers other than raw) its ratio to the raw floor."""
    header = "| figure | " + " | ".join(peers) + " |"
    lines = [header, "|---|" + "--:|" * len(peers)]
    for measurement, result in results.items():
        for metric in result["metrics"]:
            cells = []
            for peer in peers:
                value = result["peers"].get(peer, {}).get("median", {}).get(metric)
                cell = fmt(value, metric)
                r = result["ratio_to_raw"].get(peer, {}).get(metric)
                if peer != FLOOR and r is not None:
                    cell += f" ({r:.2f}x)"
                cells.append(cell)
            lines.append(f"| {measurement} {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
