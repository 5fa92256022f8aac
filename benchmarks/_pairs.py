"""Shared by the timing benchmarks: interleaved A/B runs (alternating order), the median of per-pair ratios."""

from __future__ import annotations

import gc
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def interleave(runs: dict[str, Callable[[int], T]], pairs: int) -> dict[str, list[T]]:
    """Run each of `runs` once per pair, in turn, and return each one's measurements.

    The order alternates from pair to pair (A B, B A, A B, ...), so that whatever favours the
    first or the second run of a pair (a drift in machine speed, memory the previous run left)
    falls on both sides equally. Garbage is collected before each run. Each run gets the pair
    index (for seeding or a fresh folder) and returns its measurement.
    """
    results: dict[str, list[T]] = {name: [] for name in runs}
    for pair in range(pairs):
        order = list(runs.items()) if pair % 2 == 0 else list(reversed(runs.items()))
        for name, run in order:
            gc.collect()
            results[name].append(run(pair))
    return results


def report(
    record: dict[str, Any], labels: tuple[str, str], values: tuple[list[float], list[float]], out: Path, target: str
) -> dict[str, Any]:
    """Add the per-pair ratios (second / first) and their median to `record`, print a table, write JSON."""
    ratios = [b / a for a, b in zip(*values, strict=True)]
    record.update(
        {
            labels[0]: [round(v, 2) for v in values[0]],
            labels[1]: [round(v, 2) for v in values[1]],
            "ratios": [round(r, 4) for r in ratios],
            "median_ratio": round(statistics.median(ratios), 4),
            "target": target,
        }
    )
    print(f"{'pair':>4} {labels[0]:>28} {labels[1]:>28} {'ratio':>7}")
    for i, (a, b, r) in enumerate(zip(*values, ratios, strict=True)):
        print(f"{i:>4} {a:>28.2f} {b:>28.2f} {r:>7.3f}")
    print(f"median ratio: {record['median_ratio']:.3f} (target: {target})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return record
