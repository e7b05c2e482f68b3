"""Live counters per model and per rollout arm, counted in each replica's memory and added to the database.

Every served inference request adds to `model:ID` and, under a rollout, to `rollout:ID:STEP:ARM`: one request, a
5xx if it failed so (any 5xx, a candidate that cannot load included: 4xx are the client's), and a latency
bucket. Every feedback event recorded adds `feedback`, `accepted` when a suggestion was taken, and, when `typed`
is known, `typed` and `hit1`/`hit3` when it was the first or among the first three suggestions. Everything runs
on the event loop, so the pending increments need no lock; `take` hands them to a flush (on a database lane),
and `restore` puts them back when the flush fails, so nothing is lost but a crashed replica's last second.

Latency is a fixed-bucket histogram (`BOUNDS_MS`), so replicas' histograms add up and p50/p99 are read from the
sum, interpolated within a bucket.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

BOUNDS_MS = (1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000)
BUCKETS = len(BOUNDS_MS) + 1  # the last: above 10 s
COUNTS = ("requests", "errors", "feedback", "accepted", "typed", "hit1", "hit3")
ARMS = ("control", "candidate", "shadow")


def model_subject(model_id: str) -> str:
    return f"model:{model_id}"


def arm_subject(rollout_id: str, step: int, arm: str) -> str:
    return f"rollout:{rollout_id}:{step}:{arm}"


def bucket_of(ms: float) -> int:
    return bisect.bisect_left(BOUNDS_MS, ms)


class Live:
    def __init__(self) -> None:
        self._pending: defaultdict[tuple[str, str], int] = defaultdict(int)

    def request(self, subjects: Iterable[str], failed: bool, seconds: float) -> None:
        name = f"ms{bucket_of(seconds * 1000)}"
        pending = self._pending
        for subject in subjects:
            pending[(subject, "requests")] += 1
            pending[(subject, name)] += 1
            if failed:
                pending[(subject, "errors")] += 1

    def feedback(self, subjects: Iterable[str], accepted: bool | None, typed_rank: int | None, typed: bool) -> None:
        """accepted None: not known (a shadow's counterfactual), so not counted."""
        pending = self._pending
        for subject in subjects:
            pending[(subject, "feedback")] += 1
            if accepted:
                pending[(subject, "accepted")] += 1
            if typed:
                pending[(subject, "typed")] += 1
                if typed_rank is not None and typed_rank <= 3:
                    pending[(subject, "hit3")] += 1
                    if typed_rank == 1:
                        pending[(subject, "hit1")] += 1

    def take(self) -> dict[tuple[str, str], int]:
        taken, self._pending = dict(self._pending), defaultdict(int)
        return taken

    def restore(self, taken: Mapping[tuple[str, str], int]) -> None:
        for key, value in taken.items():
            self._pending[key] += value


def add(*counters: Mapping[str, int]) -> dict[str, int]:
    total: defaultdict[str, int] = defaultdict(int)
    for c in counters:
        for name, value in c.items():
            total[name] += value
    return dict(total)


def percentile_ms(counters: Mapping[str, int], q: float) -> float | None:
    """The q-quantile of the latency histogram, linear within its bucket; None with no requests."""
    counts = [counters.get(f"ms{i}", 0) for i in range(BUCKETS)]
    n = sum(counts)
    if n == 0:
        return None
    rank = q * n
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            low = BOUNDS_MS[i - 1] if i > 0 else 0.0
            high = BOUNDS_MS[i] if i < len(BOUNDS_MS) else BOUNDS_MS[-1]
            return round(low + (high - low) * max(0.0, rank - seen) / c, 3)
        seen += c
    return float(BOUNDS_MS[-1])


def summary(counters: Mapping[str, int]) -> dict[str, Any]:
    """What GET /models/{id} shows as `live`, and a rollout shows per arm."""
    feedback, typed = counters.get("feedback", 0), counters.get("typed", 0)
    accepted = counters.get("accepted", 0)
    return {"requests": counters.get("requests", 0), "errors": counters.get("errors", 0),
            "p50_ms": percentile_ms(counters, 0.5), "p99_ms": percentile_ms(counters, 0.99),
            "impressions_with_feedback": feedback, "accepted": accepted,
            "acceptance_rate": round(accepted / feedback, 6) if feedback else None,
            "typed": typed,
            "hit_at_1": round(counters.get("hit1", 0) / typed, 6) if typed else None,
            "hit_at_3": round(counters.get("hit3", 0) / typed, 6) if typed else None}
