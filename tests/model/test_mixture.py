"""The chain-and-templates teacher (model/mixture.py): a distribution, what EM recovers, and where it is chosen."""
from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from model import mixture, ngram, validation
from model.config import ModelConfig

V, L = 10, 4


def noisy_templates(n: int, seed: int, noise: float = 0.1) -> list[list[int]]:
    """Draws of 5 templates (Zipf weights), each digit replaced by a uniform one with probability `noise`."""
    fixed = random.Random(99)  # the same templates whatever the draws' seed
    shapes = [[fixed.randrange(V) for _ in range(L)] for _ in range(5)]
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(5)]
    out = []
    for _ in range(n):
        shape = rng.choices(shapes, weights)[0]
        out.append([rng.randrange(V) if rng.random() < noise else d for d in shape])
    return out


def test_the_kernel_keeps_the_mass_and_spreads_it_per_digit():
    w = torch.zeros(V ** L, dtype=torch.float64)
    w[1234] = 1.0
    spread = mixture._noise(w, V, L, 0.2)
    assert float(spread.sum()) == pytest.approx(1.0, abs=1e-12)
    for s in ((1, 2, 3, 4), (1, 2, 3, 9), (0, 0, 0, 0)):
        same = sum(a == b for a, b in zip(s, (1, 2, 3, 4)))
        index = int("".join(map(str, s)))
        assert float(spread[index]) == pytest.approx(0.82 ** same * 0.02 ** (L - same), rel=1e-12)


def test_the_fit_is_a_distribution_over_continuations_and_topk_is_exact():
    data = noisy_templates(600, 0)
    model, _ = mixture.fit(data[:500], data[500:], V, L)
    for prefix in ([3], [0, 1], [7, 2, 5]):
        rest = list(itertools.product(range(V), repeat=L - len(prefix)))
        sequences = [prefix + list(r) for r in rest]
        logp = model.log_prob([prefix] * len(sequences), sequences)
        assert sum(math.exp(v) for v in logp) == pytest.approx(1.0, abs=1e-9)
        brute = sorted(zip(logp, map(tuple, sequences)), reverse=True)[:5]
        assert [v for _, v in model.topk([prefix], 5)[0]] == pytest.approx([v for v, _ in brute], abs=1e-12)


def test_on_noisy_templates_it_beats_every_ngram_on_fresh_draws():
    data, fresh = noisy_templates(3000, 1), noisy_templates(5000, 2)
    train, valid = data[:2700], data[2700:]
    model, held = mixture.fit(train, valid, V, L)
    best = ngram.fit_best(train, valid, V, L)
    assert held < ngram.mean_nll(best, valid)
    assert ngram.mean_nll(model, fresh) < 0.97 * ngram.mean_nll(best, fresh)
    assert model.settings["kind"] == "mixture" and model.settings["eps"] in mixture.EPSILONS


def test_refit_with_the_chosen_settings_on_the_same_data_is_the_same_model():
    data = noisy_templates(800, 3)
    model, _ = mixture.fit(data[:700], data[700:], V, L)
    again = validation.refit(model, data[:700])
    for t in range(1, L):
        assert torch.allclose(again.tables[t], model.tables[t], atol=1e-9)


def test_the_teacher_is_whichever_does_better_on_the_held_out_part():
    """Noisy templates: the mixture teaches. An order-1 chain is what Kneser-Ney models, so there the mixture is
    chosen only when its held-out NLL is lower (its chain alone can be, with no discounts to pay)."""
    config = ModelConfig(seq_length=L)
    templates = validation.split(noisy_templates(3000, 5), 0.1, 0)
    assert templates is not None
    assert validation.teacher(templates, config, validation.baseline(templates, config)).settings["kind"] == "mixture"
    rng = random.Random(4)
    nexts = {d: rng.sample(range(V), 3) for d in range(V)}

    def draw() -> list[int]:
        s = [rng.randrange(V)]
        while len(s) < L:
            s.append(rng.choice(nexts[s[-1]]))
        return s

    parts = validation.split([draw() for _ in range(3000)], 0.1, 0)
    assert parts is not None
    base = validation.baseline(parts, config)
    assert base is not None
    mixed, held = mixture.fit(parts.train, parts.valid, V, L)
    expected = mixed if held < ngram.mean_nll(base, parts.valid) else base
    assert validation.teacher(parts, config, base).name == expected.name
    assert validation.teacher(parts, ModelConfig(seq_length=L), None) is None  # no baseline (tables too large): none
