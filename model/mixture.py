"""A teacher for sampled corpora that counting digits does not give: a Markov chain and noisy templates, mixed.

Usage that nobody wrote down is often a few habits typed with slips: a handful of frequent sequences, each digit
now and then replaced by another. An n-gram sees only short contexts, so it smears a frequent sequence's
probability over everything that shares a digit pair with it; a whole-sequence table cannot tell a slip it never
saw from anything else unseen. This model writes both down:

    P(s) = lam * C(s) + (1 - lam) * sum_t w_t * prod_i [(1 - eps) 1(s_i = t_i) + eps / V]

- C, a chain of order k: the first k digits from a table of their own, each later digit from the k before it
  (pooled over positions), add-delta smoothed;
- templates t with weights w, any of the V^L sequences: a draw is a template whose digits are each replaced by a
  uniform one with probability eps. The kernel is a product over positions, so applied to all V^L weights it is
  L sums, and fitting w by EM is Richardson-Lucy deconvolution.

EM shares each training sequence between the chain and the templates, refits the chain on its share and
deconvolves the rest; eps, k and the number of iterations are chosen on the held-out part, and the best is kept
only if it beats the n-gram baselines there (model/ngram.py fit_best). On bench/processes.py's processes, 30,000
samples (seed 0), it came 0.1-2.5% above the true entropy where the best n-gram was 0.5-5.7% above; on the order-1
chain, which an n-gram models exactly, the n-gram is kept.

The result is an ngram.CountModel: the joint is enumerated, so its next-digit tables are exact conditionals.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from . import ngram

EPSILONS = (0.05, 0.1, 0.2)
ORDERS = (1, 2)
DELTA = 0.1  # the chain's add-delta, per cell of its weighted counts
MAX_ITERATIONS = 400
CHECK_EVERY = 5
PATIENCE = 4  # checks without a held-out loss better by TOLERANCE nats before a setting stops
TOLERANCE = 1e-4  # a chain 30,000 draws long gained 0.0001 between iterations 40 and 400
WORK = 600_000_000  # table entries times iterations, all settings together: 600 iterations of a million-entry
# table (length 6) take about 25 s here; a 30,000-sequence order-2 chain of length 6 needed about 300


def fits(vocab_size: int, seq_length: int) -> bool:
    return ngram.fits(vocab_size, seq_length) and seq_length >= 2


def _counts(sequences: Sequence[Sequence[int]], V: int, L: int) -> Tensor:
    index = _index(sequences, V, L)
    c = torch.zeros(V ** L, dtype=torch.float64)
    c.index_add_(0, index, torch.ones(index.numel(), dtype=torch.float64))
    return c


def _index(sequences: Sequence[Sequence[int]], V: int, L: int) -> Tensor:
    seqs = torch.tensor([list(s) for s in sequences], dtype=torch.long).view(-1, L)
    index = torch.zeros(seqs.size(0), dtype=torch.long)
    for i in range(L):
        index = index * V + seqs[:, i]
    return index


def _noise(w: Tensor, V: int, L: int, eps: float) -> Tensor:
    """sum_t w_t K(s | t) for every s: per position, keep with 1 - eps, or spread eps uniformly."""
    x = w
    for a in range(L):
        view = x.view(V ** a, V, V ** (L - a - 1))
        x = torch.add(view.sum(1, keepdim=True).mul_(eps / V), view, alpha=1 - eps).view(-1)
    return x


def _chain(c: Tensor, V: int, L: int, order: int) -> Tensor:
    """The chain's joint probability of every sequence, fitted on weighted counts c."""
    start = c.view(V ** order, -1).sum(1) + DELTA
    start = start / start.sum()
    moves = torch.zeros(V ** order, V, dtype=torch.float64)
    for t in range(order, L):
        moves += c.view(V ** (t - order), V ** order, V, V ** (L - t - 1)).sum((0, 3))
    moves = (moves + DELTA) / (moves + DELTA).sum(1, keepdim=True)
    p = start
    for _ in range(order, L):
        p = (p.view(-1, V ** order, 1) * moves.view(1, V ** order, V)).reshape(-1)
    return p


class _Fit:
    """EM from the training counts, one setting; step() is one iteration."""

    def __init__(self, counts: Tensor, V: int, L: int, eps: float, order: int):
        self.counts, self.V, self.L, self.eps, self.order = counts, V, L, eps, order
        self.n = float(counts.sum())
        self.w = counts / self.n
        self.lam = 0.5
        self.chain = _chain(counts, V, L, order)

    def joint(self) -> Tensor:
        return self.lam * self.chain + (1 - self.lam) * _noise(self.w, self.V, self.L, self.eps)

    def step(self) -> Tensor:
        """One iteration; the joint it started from (the previous iteration's fit)."""
        joint = self.joint()
        ratio = self.counts / joint  # 0 where nothing was seen
        to_chain = self.lam * self.chain * ratio
        kept = float(to_chain.sum())
        w = self.w * _noise(ratio, self.V, self.L, self.eps)  # the kernel is symmetric: K^T = K
        self.w = w / w.sum()
        self.lam = min(max(kept / self.n, 1e-6), 1 - 1e-6)
        self.chain = _chain(to_chain, self.V, self.L, self.order)
        return joint


def _nll(joint: Tensor, index: Tensor, V: int, L: int, prefix_length: int) -> float:
    """Mean -log P(the digits after prefix_length | the prefix) of the sequences at `index`."""
    tail = V ** (L - prefix_length)
    prefix = joint.view(-1, tail).sum(1)
    return float(-(joint[index].log() - prefix[index // tail].log()).mean())


def _tables(joint: Tensor, V: int, L: int) -> list[Tensor]:
    tables: list[Tensor] = [torch.zeros(1, V, dtype=torch.float64)]
    for t in range(1, L):
        m = joint.view(V ** (t + 1), -1).sum(1).view(V ** t, V).clamp_min(1e-300)
        tables.append((m / m.sum(1, keepdim=True)).log())
    return tables


def _model(joint: Tensor, V: int, L: int, eps: float, order: int, iterations: int, lam: float) -> ngram.CountModel:
    return ngram.CountModel(f"mixture(chain order={order}, templates eps={eps}, chain share={lam:.2f}, "
                            f"{iterations} iterations)", V, L, _tables(joint, V, L),
                            {"kind": "mixture", "eps": eps, "order": order, "iterations": iterations})


def fit(train: Sequence[Sequence[int]], valid: Sequence[Sequence[int]], vocab_size: int, seq_length: int,
        prefix_length: int = 1) -> tuple[ngram.CountModel, float]:
    """The setting and iteration with the lowest held-out NLL after prefix_length digits, and that NLL."""
    V, L = vocab_size, seq_length
    counts, held = _counts(train, V, L), _index(valid, V, L)
    best: tuple[float, Tensor, float, int, int, float] | None = None
    left = max(WORK // V ** L, len(ORDERS) * len(EPSILONS) * CHECK_EVERY)  # iterations, all settings together
    for order in (k for k in ORDERS if k < L):
        for eps in EPSILONS:
            em, stale, mine = _Fit(counts, V, L, eps, order), 0, math.inf
            for it in range(MAX_ITERATIONS + 1):
                left -= 1
                if left < 0 and it > 0:
                    break
                lam = em.lam
                joint = em.step()  # the fit after `it` iterations
                if it % CHECK_EVERY:
                    continue
                loss = _nll(joint, held, V, L, prefix_length)
                if best is None or loss < best[0]:
                    best = (loss, joint, eps, order, it, lam)
                stale = 0 if loss < mine - TOLERANCE else stale + 1
                mine = min(mine, loss)
                if stale >= PATIENCE:
                    break
    assert best is not None
    loss, joint, eps, order, iterations, lam = best
    return _model(joint, V, L, eps, order, iterations, lam), loss


def refit(settings: dict, sequences: Sequence[Sequence[int]], vocab_size: int, seq_length: int) -> ngram.CountModel:
    """The same setting, run for the chosen number of iterations on other sequences."""
    em = _Fit(_counts(sequences, vocab_size, seq_length), vocab_size, seq_length, settings["eps"], settings["order"])
    for _ in range(settings["iterations"]):
        em.step()
    return _model(em.joint(), vocab_size, seq_length, settings["eps"], settings["order"], settings["iterations"],
                  em.lam)
