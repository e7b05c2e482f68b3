"""Calibration: the distance from a corpus's frequencies is exact, and the default recipe gets close."""
import itertools
import math

import pytest
import torch

from model import decoding
from model.calibration import calibration, conditionals
from model.config import ModelConfig, TrainConfig
from model.training import Dataset, train

CORPUS = [[1, 2, 3, 1]] * 6 + [[1, 3, 0, 2]] * 3 + [[1, 0, 0, 1]] * 1 + [[2, 1, 1, 3]] * 12 + [[2, 3, 3, 0]] * 5 + \
         [[2, 2, 0, 0]] * 2


def brute_force_tv(model, prefix, counter):
    """1/2 sum |P_model - P_corpus| over every continuation, enumerated."""
    L, V = model.config.seq_length, model.config.vocab_size
    known = decoding.known_tokens(len(prefix), L)
    seqs = [list(prefix[:known]) + list(c) for c in itertools.product(range(V), repeat=L - known)]
    probs = [math.exp(s) for s in decoding.score(model, [list(prefix)] * len(seqs), seqs)]
    total = sum(counter.values())
    return 0.5 * sum(abs(p - counter.get(tuple(s), 0) / total) for p, s in zip(probs, seqs))


def test_the_distance_equals_brute_force_enumeration():
    torch.manual_seed(0)
    model = train(ModelConfig(vocab_size=4, seq_length=4, hidden_dim=16), TrainConfig(steps=40),
                  Dataset(ModelConfig(vocab_size=4, seq_length=4, hidden_dim=16), CORPUS)).model
    lengths = (1, 2, 3, 4)
    table = conditionals(CORPUS, lengths)
    tv = {p: brute_force_tv(model, p, c) for p, c in table.items()}
    got = calibration(model, CORPUS, lengths)
    assert got["calibration_tv_mean"] == pytest.approx(sum(tv.values()) / len(tv), abs=1e-5)
    assert got["calibration_tv_max"] == pytest.approx(max(tv.values()), abs=1e-5)
    starts = [v for p, v in tv.items() if len(p) == 1]
    assert got["calibration_tv_start_mean"] == pytest.approx(sum(starts) / 2, abs=1e-5)
    assert got["calibration_prefixes"] == len(table)


def test_the_default_recipe_matches_a_small_corpus_and_stores_the_metric():
    cfg = ModelConfig(vocab_size=4, seq_length=4)  # the default network, a smaller alphabet and length
    result = train(cfg, TrainConfig(steps=300), Dataset(cfg, CORPUS))  # the default recipe, shorter for a test
    m = result.metrics
    assert m["full_batch_examples"] == 6 * 4  # six distinct sequences, four prefix lengths each
    assert m["calibration_tv_start_mean"] <= 0.03 and m["calibration_ranked_start"] == 1.0
    assert m["calibration_tv_mean"] <= 0.03 and m["calibration_ranked"] == 1.0
    for start, expected in ((1, [[1, 2, 3, 1], [1, 3, 0, 2], [1, 0, 0, 1]]), (2, [[2, 1, 1, 3], [2, 3, 3, 0], [2, 2, 0, 0]])):
        assert [c.sequence for c in decoding.topk(result.model, [[start]], 3)[0]] == expected
