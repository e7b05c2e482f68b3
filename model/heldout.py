"""How good a predictive keyboard's suggestions are on sequences it was not trained on.

The figures, for sequences of length L whose first digit the user types:
- nll: mean -log P(the rest | the first digit), in nats per sequence;
- hit@1, hit@3: whether the sequence is the first, or among the first three, suggestions for its first digit;
- mrr: mean reciprocal rank of the sequence among the first three suggestions (0 when absent);
- keystroke savings: the share of the L digits the user need not type when taking the first suggestion list,
  after 1, 2, ... L-1 typed digits, that holds the sequence (0 when none does).

Anything with log_prob(prefixes, sequences) and topk(prefixes, k) can be judged: a network through Neural,
a count baseline (model/ngram.py) as it is. per_item() gives each sequence's values, so two models can be
compared on the same sequences with a paired bootstrap.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import decoding
from .network import Seq2Seq

K = 3  # suggestions a keyboard shows
FIGURES = ("nll", "hit1", "hit3", "mrr", "keystroke_savings")


class Scorer(Protocol):
    def log_prob(self, prefixes: Sequence[Sequence[int]], sequences: Sequence[Sequence[int]]) -> list[float]: ...

    def topk(self, prefixes: Sequence[Sequence[int]], k: int) -> list[list[tuple[tuple[int, ...], float]]]: ...


class Neural:
    """A network as a Scorer: teacher-forced scores and exact (or planned beam) top-k."""

    def __init__(self, model: Seq2Seq):
        self.model = model

    def log_prob(self, prefixes: Sequence[Sequence[int]], sequences: Sequence[Sequence[int]]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(prefixes), 65_536):
            out += decoding.score(self.model, [list(p) for p in prefixes[start:start + 65_536]],
                                  [list(s) for s in sequences[start:start + 65_536]])
        return out

    def topk(self, prefixes: Sequence[Sequence[int]], k: int) -> list[list[tuple[tuple[int, ...], float]]]:
        found = decoding.topk(self.model, [list(p) for p in prefixes], k)
        return [[(tuple(c.sequence), c.score) for c in row] for row in found]


def suggestions(scorer: Scorer, prefixes: set[tuple[int, ...]], k: int = K) -> dict[tuple[int, ...], list[tuple[int, ...]]]:
    """The top k sequences of each prefix, asked once per distinct prefix."""
    ordered = sorted(prefixes, key=lambda p: (len(p), p))
    return {p: [s for s, _ in row] for p, row in zip(ordered, scorer.topk([list(p) for p in ordered], k))}


def per_item(scorer: Scorer, sequences: Sequence[Sequence[int]], k: int = K,
             prefix_length: int = 1) -> dict[str, list[float]]:
    """Each sequence's figures (FIGURES), in order; hit and rank at prefix_length typed digits."""
    seqs = [tuple(s) for s in sequences]
    if not seqs:
        return {name: [] for name in FIGURES}
    L = len(seqs[0])
    logp = scorer.log_prob([s[:prefix_length] for s in seqs], seqs)
    lists = suggestions(scorer, {s[:p] for s in seqs for p in range(1, L)}, k)
    out: dict[str, list[float]] = {name: [] for name in FIGURES}
    for s, lp in zip(seqs, logp):
        top = lists[s[:prefix_length]]
        rank = top.index(s) + 1 if s in top else 0
        out["nll"].append(-lp)
        out["hit1"].append(float(rank == 1))
        out["hit3"].append(float(0 < rank <= 3))
        out["mrr"].append(1.0 / rank if rank else 0.0)
        typed = next((p for p in range(1, L) if s in lists[s[:p]]), L)
        out["keystroke_savings"].append((L - typed) / L)
    return out


def figures(scorer: Scorer, sequences: Sequence[Sequence[int]], k: int = K, prefix_length: int = 1) -> dict[str, float]:
    """The mean of each figure over the sequences."""
    items = per_item(scorer, sequences, k, prefix_length)
    n = max(1, len(sequences))
    return {name: sum(values) / n for name, values in items.items()}
