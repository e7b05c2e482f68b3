"""Paired bootstrap confidence intervals: how sure a difference between two models scored on the same items is.

Both models are scored on the same items, so the items are resampled once per draw for both: the interval is of
the mean of the per-item differences, and whatever makes an item easy or hard for both cancels. Percentile
intervals from `resamples` draws, seeded, so the same figures give the same interval.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

CELLS = 4_000_000  # resampled indices held at once


@dataclass(frozen=True)
class Interval:
    mean: float  # the mean difference (b - a) on the items themselves
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": round(self.mean, 6), "low": round(self.low, 6), "high": round(self.high, 6), "n": self.n}


def paired(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000,
           seed: int = 0) -> Interval:
    """The mean of b - a item by item, and its two-sided `confidence` percentile interval."""
    if len(a) != len(b):
        raise ValueError(f"paired figures need the same items: {len(a)} against {len(b)}")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError("confidence must be within (0, 1) and resamples at least 1")
    n = len(a)
    if n == 0:
        return Interval(0.0, float("-inf"), float("inf"), 0)  # no items: nothing is known
    diff = torch.tensor(b, dtype=torch.float64) - torch.tensor(a, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    means = []
    rows = max(1, CELLS // n)
    for start in range(0, resamples, rows):
        take = min(rows, resamples - start)
        index = torch.randint(n, (take, n), generator=gen)
        means.append(diff[index].mean(1))
    draws = torch.cat(means)
    tail = (1 - confidence) / 2
    low, high = torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return Interval(float(diff.mean()), low, high, n)
