"""Generating processes for digit sequences whose exact distribution is known by enumeration, so a model's
held-out negative log-likelihood can be set against the true entropy (bench/generalization.py).

Each process is a probability for every one of the V^L sequences (V = 10), built from a seeded random draw:
- markov1: an order-1 chain, each digit followed by one of 3 digits;
- markov2: an order-2 chain, each pair of digits followed by one of 2 or 3;
- templates: 300 Zipf-weighted templates, each digit replaced by a uniform one with probability 0.1;
- mixture: half markov1, half templates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

V = 10


@dataclass
class Process:
    name: str
    seq_length: int
    probs: torch.Tensor  # (V^L,) float64: P(sequence), sequences in lexicographic order

    def sample(self, n: int, seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        index = torch.multinomial(self.probs, n, replacement=True, generator=gen)
        return _sequences(index, self.seq_length).tolist()

    def entropy_given_first(self) -> float:
        """H(S | S_1) in nats: what no model can beat on -log P(rest | first digit)."""
        p = self.probs[self.probs > 0]
        first = self.probs.view(V, -1).sum(1)
        first = first[first > 0]
        return float(-(p * p.log()).sum() + (first * first.log()).sum())

    def top3_hits(self, sequences: list[list[int]]) -> tuple[float, float]:
        """hit@1 and hit@3 of the true distribution's own top 3 for each first digit."""
        top = self.probs.view(V, -1).topk(3, dim=1).indices  # within each first digit
        width = V ** (self.seq_length - 1)
        hit1 = hit3 = 0
        for s in sequences:
            rest = sum(d * V ** (self.seq_length - 2 - i) for i, d in enumerate(s[1:]))
            row = top[s[0]].tolist()
            hit1 += row[0] == rest
            hit3 += rest in row
        assert width > 0
        return hit1 / len(sequences), hit3 / len(sequences)


def _sequences(index: torch.Tensor, L: int) -> torch.Tensor:
    digits = []
    for i in range(L):
        digits.append(index // V ** (L - 1 - i) % V)
    return torch.stack(digits, 1)


def _all(L: int) -> torch.Tensor:
    return _sequences(torch.arange(V ** L), L)


def _sparse_rows(rows: int, fanout: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A (rows, V) transition table: each row puts Dirichlet(1) weights on a few random next digits."""
    table = torch.zeros(rows, V, dtype=torch.float64)
    for r in range(rows):
        k = fanout[int(torch.randint(len(fanout), (1,), generator=gen))]
        nexts = torch.randperm(V, generator=gen)[:k]
        w = -torch.rand(k, generator=gen, dtype=torch.float64).log()
        table[r, nexts] = w / w.sum()
    return table


def markov(order: int, L: int, seed: int, fanout: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    start = -torch.rand(V ** order, generator=gen, dtype=torch.float64).log()
    start /= start.sum()  # the first `order` digits
    table = _sparse_rows(V ** order, fanout, gen)
    seqs = _all(L)
    head = torch.zeros(seqs.size(0), dtype=torch.long)
    for i in range(order):
        head = head * V + seqs[:, i]
    probs = start[head]
    for t in range(order, L):
        ctx = torch.zeros_like(head)
        for i in range(t - order, t):
            ctx = ctx * V + seqs[:, i]
        probs = probs * table[ctx, seqs[:, t]]
    return probs


def templates(L: int, seed: int, count: int = 300, noise: float = 0.1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.randint(V, (count, L), generator=gen)
    weights = 1.0 / torch.arange(1, count + 1, dtype=torch.float64)  # Zipf
    weights /= weights.sum()
    seqs = _all(L)
    probs = torch.zeros(seqs.size(0), dtype=torch.float64)
    keep, swap = math.log(1 - noise + noise / V), math.log(noise / V)
    for start in range(0, count, 50):
        part = shapes[start:start + 50]
        same = (seqs.unsqueeze(1) == part.unsqueeze(0)).sum(2).double()  # (V^L, templates)
        logp = same * keep + (L - same) * swap
        probs += (logp.exp() * weights[start:start + 50]).sum(1)
    return probs


def processes() -> list[Process]:
    m1 = markov(1, 5, seed=11, fanout=(3,))
    tp = templates(5, seed=13)
    return [
        Process("markov1", 5, m1),
        Process("markov2", 6, markov(2, 6, seed=12, fanout=(2, 3))),
        Process("templates", 5, tp),
        Process("mixture", 5, 0.5 * m1 + 0.5 * tp),
    ]


if __name__ == "__main__":
    for p in processes():
        assert abs(float(p.probs.sum()) - 1) < 1e-9, p.name
        print(p.name, p.seq_length, round(p.entropy_given_first(), 4), "nats", p.top3_hits(p.sample(10_000, 1)))
