"""The offline gate with real (small) models: a candidate trained on honest usage passes, one trained on corrupted
feedback is refused, and the paired bootstrap's intervals behave as intervals should."""
from __future__ import annotations

import random

import pytest
import torch

from app.learning.training_set import build
from model.bootstrap import paired
from model.config import ModelConfig, TrainConfig
from model.gate import judge
from model.heldout import Neural
from model.ngram import additive
from model.training import Dataset, train

CONFIG = ModelConfig(embedding_dim=8, hidden_dim=32, attention=False)
TRAINING = TrainConfig(steps=400, seed=0)  # enough for this corpus's 6:3:1 top-3s (300 at width 24 forgot one in 40)
BASE = [[d, (d + 1) % 10, 5, 8, 8] for d in range(6) for _ in range(6)] + \
       [[d, (d + 2) % 10, 6, 9, 8] for d in range(6) for _ in range(3)] + [[d, 7, 9, 7, 3] for d in range(6)]
USERS = {3: [(3, 0, 0, 1, 1), (3, 9, 9, 2, 2), (3, 4, 4, 4, 4)], 4: [(4, 0, 0, 1, 1), (4, 9, 9, 2, 2), (4, 4, 3, 2, 1)]}


class Event:
    def __init__(self, seq, session, typed):
        self.seq, self.session, self.typed, self.accepted = seq, session, typed, None


def usage(seed: int, sessions: int = 150, per_session: int = 4, corrupt_before: int = 0):
    """Users who type digits 3 and 4 and favour continuations the base corpus lacks (0.6, 0.3, 0.1); the events of
    the first `corrupt_before` sessions are replaced by noise with the same first digit (one of 8 wrong
    continuations per digit, drawn at random)."""
    rng = random.Random(seed)
    noise = {d: [(d, *(rng.randrange(10) for _ in range(4))) for _ in range(8)] for d in USERS}
    events = []
    for s in range(sessions):
        for _ in range(per_session):
            digit = rng.choice([3, 4])
            typed = rng.choices(USERS[digit], weights=[0.6, 0.3, 0.1])[0]
            if s < corrupt_before:
                typed = rng.choice(noise[digit])
            events.append(Event(len(events), f"u{s}", typed))
    return events


def trained(sequences):
    return Neural(train(CONFIG, TRAINING, Dataset(CONFIG, [list(s) for s in sequences])).model)


@pytest.fixture(scope="module")
def control():
    before = torch.get_num_threads()  # module fixtures come before the package's one-thread fixture
    torch.set_num_threads(1)
    try:
        return trained(BASE)
    finally:
        torch.set_num_threads(before)


def gate_of(control, events):
    built = build(BASE, events, seq_length=5, vocab_size=10, holdout_fraction=0.1, session_cap=0.01, usage_weight=1.0)
    return judge(control, trained(built.sequences), built.holdout, built.base_eval, resamples=500), built


def test_a_candidate_trained_on_honest_usage_passes(control):
    figures, built = gate_of(control, usage(1))
    assert built.touched == [3, 4] and figures["base"]["n"] == len(built.base_eval) > 0
    assert figures["passed"], figures["reason"]
    assert figures["usage"]["control"]["hit3"] == 0.0  # the base model never suggests what these users type
    assert figures["usage"]["difference"]["hit3"]["low"] > 0.5
    assert figures["base"]["candidate"]["hit3"] >= figures["base"]["control"]["hit3"] - 0.02


def test_a_candidate_trained_on_corrupted_feedback_is_refused(control):
    # every session but the held-out ones sends noise: the candidate learns nothing users want
    figures, built = gate_of(control, usage(1, corrupt_before=135))
    assert built.counts["holdout_sessions"] == 15
    assert not figures["passed"]
    assert "usage hit@3" in figures["reason"] and "not shown to improve" in figures["reason"]
    assert figures["usage"]["difference"]["hit3"]["low"] <= 0


def test_a_candidate_that_forgets_untouched_prefixes_is_refused(control):
    built = build(BASE, usage(2), seq_length=5, vocab_size=10, holdout_fraction=0.1, session_cap=0.01, usage_weight=1.0)
    # a count model of the usage alone knows users' continuations and nothing of the other prefixes
    forgetful = additive([list(s) for s in built.usage], vocab_size=10, seq_length=5, alpha=0.01)
    figures = judge(control, forgetful, built.holdout, built.base_eval, resamples=500)
    assert figures["usage"]["difference"]["hit3"]["low"] > 0
    assert not figures["passed"] and "fell too far" in figures["reason"]


def test_the_paired_bootstrap_interval():
    same = paired([1, 0, 1, 0], [1, 0, 1, 0])
    assert (same.mean, same.low, same.high) == (0, 0, 0)
    rng = random.Random(0)
    a = [float(rng.random() < 0.3) for _ in range(400)]
    b = [float(rng.random() < 0.6) for _ in range(400)]
    better = paired(a, b, resamples=1000, seed=3)
    assert 0 < better.low < better.mean < better.high
    assert better == paired(a, b, resamples=1000, seed=3)  # seeded
    narrow = paired(a, b, confidence=0.5, resamples=1000, seed=3)
    assert better.low < narrow.low and narrow.high < better.high
    empty = paired([], [])
    assert empty.n == 0 and empty.low == float("-inf")
    with pytest.raises(ValueError):
        paired([1.0], [1.0, 0.0])
