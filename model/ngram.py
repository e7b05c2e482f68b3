"""Count-based baselines for a corpus of fixed-length digit sequences: what a neural model must beat.

Both baselines are written as dense tables of next-digit probabilities, one row per possible history:
table[t][h] is P(x_t | the first t digits, read as the base-V number h). V^1 + ... + V^(L-1) rows of V floats is
1.1 million numbers for ten digits and length 6, so scoring is a lookup and the top k of a prefix is an exact
enumeration, and the probabilities of a prefix's continuations sum to 1 by construction.

- Interpolated Kneser-Ney (modified: three discounts per order from the counts of counts, Chen and Goodman 1998)
  over digit n-grams of each order up to the sequence length, with contexts that know the position of the digit
  they predict (a sequence's digits need not be exchangeable) or that pool every position (a Markov chain's are).
- A whole-continuation table with add-alpha smoothing: P(rest | prefix) = (c(s) + a) / (c(prefix) + a V^(L-p)),
  whose per-digit factors telescope into the same kind of table.

fit_best() fits each on a training split and keeps the one with the lowest negative log-likelihood on a
validation split.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_TABLE = 4_000_000  # V^(L-1) * V probabilities at most: a 10-digit vocabulary up to length 7
ENUMERATE_LIMIT = 4_000_000  # scores held at once while enumerating continuations for top-k
ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0)


class BaselineError(ValueError):
    """A vocabulary and length whose tables would be too large to enumerate."""


def fits(vocab_size: int, seq_length: int) -> bool:
    return vocab_size ** seq_length <= MAX_TABLE


@dataclass
class CountModel:
    """Next-digit tables; `name` says which baseline and its settings."""

    name: str
    vocab_size: int
    seq_length: int
    tables: list[Tensor]  # tables[t]: (V^t, V) log-probabilities of digit t given the first t; tables[0] unused

    def log_prob(self, prefixes: Sequence[Sequence[int]], sequences: Sequence[Sequence[int]]) -> list[float]:
        """log P(sequence[len(prefix):] | prefix) for each pair (the sequence starts with its prefix)."""
        seqs = torch.tensor([list(s) for s in sequences], dtype=torch.long)
        known = torch.tensor([len(p) for p in prefixes], dtype=torch.long)
        total = torch.zeros(len(seqs), dtype=torch.float64)
        history = seqs[:, 0].clone()
        for t in range(1, self.seq_length):
            step = self.tables[t][history, seqs[:, t]]
            total += torch.where(known <= t, step, torch.zeros_like(step))
            history = history * self.vocab_size + seqs[:, t]
        return total.tolist()

    def topk(self, prefixes: Sequence[Sequence[int]], k: int) -> list[list[tuple[tuple[int, ...], float]]]:
        """The k most likely complete sequences for each prefix, best first, with their log-probabilities."""
        V, L = self.vocab_size, self.seq_length
        results: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in prefixes]
        by_length: dict[int, list[int]] = {}
        for i, prefix in enumerate(prefixes):
            by_length.setdefault(len(prefix), []).append(i)
        for p, members in by_length.items():
            width = V ** (L - p)
            per_call = max(1, ENUMERATE_LIMIT // width)
            for start in range(0, len(members), per_call):
                part = members[start:start + per_call]
                history = torch.zeros(len(part), 1, dtype=torch.long)
                for j in range(p):
                    history = history * V + torch.tensor([prefixes[i][j] for i in part]).unsqueeze(1)
                scores = torch.zeros(len(part), 1, dtype=torch.float64)
                for t in range(p, L):
                    scores = (scores.unsqueeze(2) + self.tables[t][history]).flatten(1)
                    history = (history.unsqueeze(2) * V + torch.arange(V)).flatten(1)
                top = scores.topk(min(k, scores.size(1)), dim=1)
                for row, i in enumerate(part):
                    for value, index in zip(top.values[row].tolist(), top.indices[row].tolist()):
                        results[i].append((tuple(prefixes[i]) + _digits(index, V, L - p), value))
        return results


def _digits(index: int, V: int, n: int) -> tuple[int, ...]:
    out = []
    for _ in range(n):
        index, d = divmod(index, V)
        out.append(d)
    return tuple(reversed(out))


def _histories(sequences: Tensor, t: int, j: int, V: int) -> Tensor:
    """The last j digits before position t of each sequence, as base-V numbers."""
    h = torch.zeros(sequences.size(0), dtype=torch.long)
    for i in range(t - j, t):
        h = h * V + sequences[:, i]
    return h


def _counts(sequences: Tensor, contexts: Tensor, targets: Tensor, rows: int, V: int) -> Tensor:
    c = torch.zeros(rows * V, dtype=torch.float64)
    c.index_add_(0, contexts * V + targets, torch.ones(contexts.size(0), dtype=torch.float64))
    return c.view(rows, V)


def _discounts(counts: Tensor) -> tuple[float, float, float]:
    """Modified Kneser-Ney's D1, D2, D3+ from the counts of counts (Chen and Goodman's estimates)."""
    n = [float((counts == r).sum()) for r in (1, 2, 3, 4)]
    if n[0] == 0 or n[1] == 0:
        return 0.5, 0.75, 0.9
    y = n[0] / (n[0] + 2 * n[1])
    d1 = 1 - 2 * y * n[1] / n[0]
    d2 = 2 - 3 * y * n[2] / n[1]
    d3 = 3 - 4 * y * n[3] / n[2] if n[2] > 0 else d2
    return tuple(min(max(d, 0.05), r - 0.05) for d, r in zip((d1, d2, d3), (1, 2, 3)))  # type: ignore[return-value]


def _interpolate(counts: Tensor, lower: Tensor) -> Tensor:
    """P(w | h) = max(c - D, 0) / c(h) + gamma(h) P_lower(w | h'); P_lower alone where h was never seen."""
    d1, d2, d3 = _discounts(counts)
    discount = torch.where(counts >= 3, d3, torch.where(counts >= 2, d2, torch.where(counts >= 1, d1, 0.0)))
    total = counts.sum(1, keepdim=True)
    gamma = discount.sum(1, keepdim=True)
    seen = total > 0
    safe = total.clamp_min(1)
    return torch.where(seen, ((counts - discount) + gamma * lower) / safe, lower)


def _continuations(higher: Tensor, V: int) -> Tensor:
    """N1+(. h w): how many distinct one-digit-longer contexts precede (h, w); rows of `higher` are (x h)."""
    return (higher.view(V, -1, V) > 0).sum(0).to(torch.float64)


def kneser_ney(sequences: Sequence[Sequence[int]], vocab_size: int, seq_length: int, order: int,
               positional: bool) -> CountModel:
    """Interpolated modified Kneser-Ney with contexts of up to order-1 digits, per position or pooled."""
    V, L = vocab_size, seq_length
    _check(V, L)
    seqs = torch.tensor([list(s) for s in sequences], dtype=torch.long)
    tables: list[Tensor] = [torch.zeros(1, V, dtype=torch.float64)]
    for t in range(1, L):
        n = min(order - 1, t)  # the longest context for position t
        positions = [t] if positional else range(n, L)  # pooled: every position with n digits of history
        raw = []
        for j in range(n + 1):
            c = torch.zeros(V ** j, V, dtype=torch.float64)
            for u in positions:
                if u >= j:
                    c += _counts(seqs, _histories(seqs, u, j, V), seqs[:, u], V ** j, V)
            raw.append(c)
        prob = torch.full((1, V), 1.0 / V, dtype=torch.float64)
        for j in range(n + 1):
            counts = raw[j] if j == n else _continuations(raw[j + 1], V)
            lower = prob[torch.arange(V ** j) % max(1, V ** (j - 1))] if j > 0 else prob
            prob = _interpolate(counts, lower)
        # rows of prob are indexed by the last n digits; a table row is the whole history of t digits
        tables.append(prob[torch.arange(V ** t) % (V ** n)].log())
    return CountModel(f"kneser_ney(order={order}, {'positional' if positional else 'pooled'})", V, L, tables)


def additive(sequences: Sequence[Sequence[int]], vocab_size: int, seq_length: int, alpha: float) -> CountModel:
    """Whole continuations counted, add-alpha: P(x_t | h) = (C(h x_t) + a V^(L-t-1)) / (C(h) + a V^(L-t))."""
    V, L = vocab_size, seq_length
    _check(V, L)
    seqs = torch.tensor([list(s) for s in sequences], dtype=torch.long)
    tables: list[Tensor] = [torch.zeros(1, V, dtype=torch.float64)]
    for t in range(1, L):
        c = _counts(seqs, _histories(seqs, t, t, V), seqs[:, t], V ** t, V)
        tables.append(((c + alpha * V ** (L - t - 1)) / (c.sum(1, keepdim=True) + alpha * V ** (L - t))).log())
    return CountModel(f"add_alpha(alpha={alpha})", V, L, tables)


def _check(V: int, L: int) -> None:
    if not fits(V, L):
        raise BaselineError(f"a vocabulary of {V} and length {L} make {V ** L} table entries; at most {MAX_TABLE}")


def mean_nll(model: CountModel, sequences: Sequence[Sequence[int]], prefix_length: int = 1) -> float:
    scores = model.log_prob([s[:prefix_length] for s in sequences], sequences)
    return -sum(scores) / len(scores)


def candidates(sequences: Sequence[Sequence[int]], vocab_size: int, seq_length: int) -> list[CountModel]:
    """Every baseline fit_best() chooses from."""
    models = [kneser_ney(sequences, vocab_size, seq_length, order, positional)
              for order in range(1, seq_length + 1) for positional in (True, False)]
    models += [additive(sequences, vocab_size, seq_length, alpha) for alpha in ALPHAS]
    return models


def fit_best(train: Sequence[Sequence[int]], valid: Sequence[Sequence[int]], vocab_size: int,
             seq_length: int, prefix_length: int = 1) -> CountModel:
    """The baseline with the lowest validation NLL of the digits after the first prefix_length."""
    best, best_nll = None, math.inf
    for model in candidates(train, vocab_size, seq_length):
        nll = mean_nll(model, valid, prefix_length)
        if nll < best_nll:
            best, best_nll = model, nll
    assert best is not None
    return best
