"""What a learning cycle trains on and what it is judged on, from the alias model's corpus and the alias's usage.

Pure: events and sequences in, sequences and figures out; the cycle stores the digests, the job the sequences.

- Usage: each feedback event's `typed` sequence, else its `accepted` one (neither, or one that does not fit the
  model's length and vocabulary: not usage).
- Sessions: an event's session, all events without one counting as one session (so an anonymous flood is one
  session too). A session's time is its first event's.
- The usage holdout: the newest `holdout_fraction` of sessions (rounded up), every event of them. Never trained on:
  the training set is built from the other sessions only, and its digest says so.
- The session cap: no session makes more than `session_cap` of the usage examples. Each session keeps its newest
  min(n, c) examples, c the largest count with c <= session_cap x (the examples kept). With fewer than
  1 / session_cap sessions nothing from usage can be kept, by this rule.
- Weights: the base corpus's sequences count once each, a usage example `usage_weight` times, lowered if usage would
  make more than `max_usage_share` of the whole (usage piles up cycle after cycle; the base corpus keeps its share).
  Counts are made whole by a common factor (at most 20; for a small weight, the base counts many times instead), and
  scaled down together if the whole would pass a job's 100,000 sequences.
- Judged on: the holdout's sequences, and the base corpus's sequences whose first digit no usage example starts with
  (the prefixes usage did not touch), where the candidate must not forget what the alias's model knew.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from model.data import corpus_hash
from model.jobspec import MAX_SEQUENCES

Seq = tuple[int, ...]
MAX_SCALE = 20  # the largest common factor that makes weights whole


class Event(Protocol):
    """What a feedback row (storage.FeedbackRow) offers: its order, its session and what the user took or typed."""

    @property
    def seq(self) -> int: ...

    @property
    def session(self) -> str | None: ...

    @property
    def accepted(self) -> tuple[int, ...] | None: ...

    @property
    def typed(self) -> tuple[int, ...] | None: ...


@dataclass(frozen=True)
class TrainingSet:
    sequences: list[list[int]]  # what the job trains on, repeats as weights, in a fixed order
    usage: list[Seq]  # the usage examples kept (after the holdout and the cap), oldest first
    holdout: list[Seq]  # the usage holdout's sequences, oldest first
    base_eval: list[Seq]  # the base corpus's sequences on the prefixes usage did not touch
    touched: list[int]  # first digits the usage examples start with
    counts: dict[str, Any] = field(default_factory=dict)

    def digests(self, base: Sequence[Sequence[int]]) -> dict[str, Any]:
        return {"training_sha256": corpus_hash(self.sequences), "training_sequences": len(self.sequences),
                "usage_sha256": corpus_hash([list(s) for s in self.usage]),
                "holdout_sha256": corpus_hash([list(s) for s in self.holdout]),
                "base_sha256": corpus_hash([list(s) for s in base]), "touched": self.touched}


def usage_of(event: Event, seq_length: int, vocab_size: int) -> Seq | None:
    """The sequence an event teaches: typed, else accepted; None if neither fits the model."""
    tokens = event.typed if event.typed is not None else event.accepted
    if tokens is None or len(tokens) != seq_length or any(not 0 <= t < vocab_size for t in tokens):
        return None
    return tuple(tokens)


def cap_count(sizes: Sequence[int], cap: float) -> int:
    """The largest c with c <= cap x sum(min(n, c)): the most examples any one session may keep. The right side
    grows with c at most as fast (times cap <= 1) and is concave, so the c that satisfy it are 0..c*."""
    low, high = 0, max(sizes, default=0)
    while low < high:
        mid = (low + high + 1) // 2
        if mid <= cap * sum(min(n, mid) for n in sizes) + 1e-9:
            low = mid
        else:
            high = mid - 1
    return low


def applied_weight(base_total: int, usage_total: int, weight: float, max_share: float) -> float:
    """A usage example's weight: `weight`, lowered if the usage would otherwise make more than `max_share` of the
    whole (so that however much usage piles up, the base corpus keeps its share of the training)."""
    if not base_total or not usage_total or weight * usage_total / (base_total + weight * usage_total) <= max_share:
        return weight
    return max_share / (1 - max_share) * base_total / usage_total


def whole_counts(base: Counter[Seq], usage: Counter[Seq], weight: float) -> Counter[Seq]:
    """base + weight x usage as whole numbers in one proportion, at most MAX_SEQUENCES in all."""
    # a small weight: the base counts many times instead
    ratio = Fraction(weight).limit_denominator(MAX_SCALE) if weight * MAX_SCALE >= 1 else Fraction(1, round(1 / weight))
    scale = ratio.denominator
    counts: Counter[Seq] = Counter()
    for s, n in base.items():
        counts[s] += n * scale
    for s, n in usage.items():
        counts[s] += n * ratio.numerator
    total = sum(counts.values())
    if total > MAX_SEQUENCES:  # scaled down together; nothing present disappears
        factor = MAX_SEQUENCES / total
        counts = Counter({s: max(1, math.floor(n * factor)) for s, n in counts.items()})
        while sum(counts.values()) > MAX_SEQUENCES:  # the floors of 1 can still overshoot: trim the largest
            s, n = counts.most_common(1)[0]
            counts[s] = n - 1
    return counts


def build(base: Sequence[Sequence[int]], events: Sequence[Event], *, seq_length: int, vocab_size: int,
          holdout_fraction: float, session_cap: float, usage_weight: float,
          max_usage_share: float = 1.0) -> TrainingSet:
    """events oldest first (by seq)."""
    sessions: dict[str, list[Seq]] = {}
    first: dict[str, int] = {}
    unusable = 0
    for event in sorted(events, key=lambda e: e.seq):
        tokens = usage_of(event, seq_length, vocab_size)
        if tokens is None:
            unusable += 1
            continue
        key = event.session if event.session is not None else ""
        sessions.setdefault(key, []).append(tokens)
        first.setdefault(key, event.seq)
    order = sorted(sessions, key=lambda k: (first[k], k))
    held = math.ceil(holdout_fraction * len(order)) if order else 0
    training_sessions, holdout_sessions = order[:len(order) - held], order[len(order) - held:]
    sizes = [len(sessions[k]) for k in training_sessions]
    c = cap_count(sizes, session_cap)
    usage: list[Seq] = []
    for k in training_sessions:  # each session's newest c, in the order they came
        usage.extend(sessions[k][-c:] if c else [])
    holdout = [s for k in holdout_sessions for s in sessions[k]]
    base_counts: Counter[Seq] = Counter(tuple(s) for s in base)
    weight = applied_weight(len(base), len(usage), usage_weight, max_usage_share)
    counts = whole_counts(base_counts, Counter(usage), weight)
    sequences = [list(s) for s in sorted(counts) for _ in range(counts[s])]
    touched = sorted({s[0] for s in usage})
    base_eval = [tuple(s) for s in base if s[0] not in set(touched)]
    figures = {"events": len(events), "unusable_events": unusable, "sessions": len(order),
               "training_sessions": len(training_sessions), "holdout_sessions": len(holdout_sessions),
               "usage_examples": len(usage), "capped_examples": sum(sizes) - len(usage), "session_limit": c,
               "holdout_examples": len(holdout), "base_sequences": len(base), "base_eval": len(base_eval),
               "training_sequences": len(sequences), "usage_weight_applied": round(weight, 6),
               "usage_share": round(weight * len(usage) / (len(base) + weight * len(usage)), 4) if usage else 0.0}
    return TrainingSet(sequences, usage, holdout, base_eval, touched, figures)
