"""How well a model's probabilities match a corpus: total-variation distance per prefix, and rankings.

For a prefix p seen in the corpus, the corpus says P(s | p) = count(s) / count(p) over the sequences s that
start with p; the model gives a distribution over every complete continuation of p. Their total-variation
distance is 1/2 sum_s |P_model(s) - P_corpus(s)|. The model's probabilities sum to 1 over all V^n
continuations, so the mass outside the corpus's few sequences is 1 minus their sum: the distance is exact
from the teacher-forced scores of the corpus's own sequences, without enumerating the rest.

A ranking is right when the model's top-k (k = the sequences the corpus has for that prefix; exact top-k)
are those sequences in the corpus's order of frequency, ties in any order.
"""
from __future__ import annotations

import math
from collections import Counter

import torch

from . import decoding
from .network import Seq2Seq

START = 1  # prefix length of "start digits"
MAX_PREFIXES = 20_000  # a larger corpus is measured on its start digits alone
MAX_RANKED = 2_000  # rankings need a top-k search per prefix: beyond this many prefixes, start digits alone


def conditionals(sequences: list[list[int]], prefix_lengths: tuple[int, ...]) -> dict[tuple[int, ...], Counter]:
    """For every prefix in the corpus, the counts of the whole sequences that start with it."""
    counts: dict[tuple[int, ...], Counter] = {}
    for seq in sequences:
        full = tuple(seq)
        for p in prefix_lengths:
            counts.setdefault(full[:p], Counter())[full] += 1
    return counts


def _ranked(found: list[tuple[int, ...]], counter: Counter) -> bool:
    if set(found) != set(counter):
        return False
    order = [counter[s] for s in found]
    return order == sorted(order, reverse=True)


@torch.inference_mode()
def calibration(model: Seq2Seq, sequences: list[list[int]], prefix_lengths: tuple[int, ...],
                rankings: bool = True) -> dict[str, float]:
    """Mean and max total-variation distance over the corpus's prefixes (all, and start digits alone), and the
    fraction of prefixes whose top-k ranking is right. Keys are the metric names stored in checkpoints."""
    table = conditionals(sequences, prefix_lengths)
    prefixes = sorted(table, key=lambda p: (len(p), p))
    if len(prefixes) > MAX_PREFIXES:
        prefixes = [p for p in prefixes if len(p) == START]
    pairs = [(list(p), list(s), n / sum(table[p].values())) for p in prefixes for s, n in table[p].items()]
    scores = decoding.score(model, [a for a, _, _ in pairs], [b for _, b, _ in pairs])
    gap = dict.fromkeys(prefixes, 0.0)
    mass = dict.fromkeys(prefixes, 0.0)
    for (p, _, freq), logp in zip(pairs, scores):
        gap[tuple(p)] += abs(math.exp(logp) - freq)
        mass[tuple(p)] += math.exp(logp)
    tv = {p: 0.5 * (gap[p] + max(0.0, 1.0 - mass[p])) for p in prefixes}
    metrics = _summary("calibration_tv", list(tv.values()))
    starts = [tv[p] for p in prefixes if len(p) == START]
    if starts:
        metrics.update(_summary("calibration_tv_start", starts))
    if rankings:
        right: dict[tuple[int, ...], bool] = {}
        ranked = prefixes if len(prefixes) <= MAX_RANKED else [p for p in prefixes if len(p) == START]
        for k in sorted({len(table[p]) for p in ranked}):
            group = [p for p in ranked if len(table[p]) == k]
            for ranked_prefix, top in zip(group, decoding.topk(model, [list(p) for p in group], k)):
                right[ranked_prefix] = _ranked([tuple(c.sequence) for c in top], table[ranked_prefix])
        if len(right) == len(prefixes):
            metrics["calibration_ranked"] = sum(right.values()) / len(right)
        if starts:
            metrics["calibration_ranked_start"] = sum(right[p] for p in prefixes if len(p) == START) / len(starts)
    metrics["calibration_prefixes"] = len(prefixes)
    return metrics


def _summary(name: str, values: list[float]) -> dict[str, float]:
    return {f"{name}_mean": sum(values) / len(values), f"{name}_max": max(values)}
