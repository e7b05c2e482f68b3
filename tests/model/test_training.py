"""The trainer: reproducible, learns the seed's copy task and a corpus's frequencies, reports, stops, cancels."""
import math
from collections import Counter

import pytest
import torch

from model import decoding
from model.config import ModelConfig, TrainConfig
from model.data import DataError
from model.training import Dataset, train

FAST_COPY = dict(teacher_forcing_ratio=0.0, learning_rate=0.01, eval_every=25)


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("attention", [False, True])
def test_same_config_and_seed_give_the_same_weights(attention):
    cfg = ModelConfig(attention=attention)
    runs = [train(cfg, TrainConfig(steps=30, seed=s), Dataset(cfg)) for s in (5, 5, 6)]
    assert torch.equal(weights(runs[0].model), weights(runs[1].model))
    assert not torch.equal(weights(runs[0].model), weights(runs[2].model))
    assert runs[0].metrics["loss"] == runs[1].metrics["loss"]


def test_copy_task_is_learned_in_a_short_run_and_stops_at_the_target():
    cfg = ModelConfig(attention=True)
    seen = []
    result = train(cfg, TrainConfig(steps=3000, target_accuracy=0.99, **FAST_COPY), Dataset(cfg), on_progress=seen.append)
    assert result.status == "target_reached"
    assert result.metrics["seq_acc"] >= 0.99 and result.metrics["eval_size"] == 10_000
    assert result.metrics["steps"] < 3000
    steps = [p.step for p in seen]
    assert steps == sorted(steps) and seen[-1].accuracy >= 0.99
    assert all(p.eta_seconds >= 0 and p.total_steps == 3000 for p in seen)
    pairs = torch.randint(1, 10, (20, 5), generator=torch.Generator().manual_seed(0)).tolist()
    decoded = decoding.greedy(result.model, pairs)
    assert sum(d.sequence == s for d, s in zip(decoded, pairs)) >= 18


def test_cancel_stops_cooperatively_between_steps():
    cfg = ModelConfig(attention=False)
    calls = []
    result = train(cfg, TrainConfig(steps=10_000), Dataset(cfg), should_stop=lambda: len(calls) >= 1,
                   on_progress=calls.append, progress_every=10)
    assert result.status == "cancelled"
    assert result.metrics["steps"] == calls[0].step <= 10  # stopped at the first check after the request


def test_a_corpus_teaches_the_most_frequent_continuation_and_ranks_by_frequency():
    corpus = [[7, 2, 8, 4, 3]] * 6 + [[7, 6, 5, 2, 8]] * 3 + [[7, 9, 1, 2, 4]] * 1 + \
             [[3, 1, 4, 1, 5]] * 5 + [[3, 5, 9, 2, 6]] * 2
    cfg = ModelConfig(attention=True)
    result = train(cfg, TrainConfig(steps=600, teacher_forcing_ratio=1.0, learning_rate=0.01), Dataset(cfg, corpus))
    assert result.metrics["top1_agreement"] == 1.0
    assert result.metrics["seq_acc"] == 1.0  # the copy task on the corpus's five distinct sequences
    counts = Counter(map(tuple, corpus))
    for start in (7, 3):
        expected = sorted((s for s in counts if s[0] == start), key=lambda s: -counts[s])
        top = decoding.topk(result.model, [[start]], len(expected))[0]
        assert [tuple(c.sequence) for c in top] == expected
        total = sum(counts[s] for s in expected)
        for cand, seq in zip(top, expected):  # probabilities near the corpus frequencies
            assert math.exp(cand.score) == pytest.approx(counts[seq] / total, abs=0.12)
        assert decoding.greedy(result.model, [[start]])[0].sequence == list(expected[0])


def test_a_corpus_that_does_not_fit_the_model_names_the_bad_sequence():
    cfg = ModelConfig()
    with pytest.raises(DataError, match="sequence 1 must be a list of 5"):
        Dataset(cfg, [[1, 2, 3, 4, 5], [1, 2, 3]])
    with pytest.raises(DataError, match="sequence 0 has token 10"):
        Dataset(cfg, [[1, 2, 3, 4, 10]])
    with pytest.raises(DataError, match="no sequences"):
        Dataset(cfg, [])


def test_history_stays_bounded_and_spans_the_whole_run():
    cfg = ModelConfig(attention=False, hidden_dim=8, embedding_dim=4)
    result = train(cfg, TrainConfig(steps=1000, eval_every=100, batch_size=8), Dataset(cfg), progress_every=1)
    steps = [h["step"] for h in result.history]
    assert len(steps) <= 401 and steps == sorted(steps)
    assert steps[0] <= 10 and steps[-1] == 1000
    assert any(h["accuracy"] is not None for h in result.history)
