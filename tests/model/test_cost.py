"""The cost model: top-k picks exact or beam search from the work it implies, and decoding keeps to the plan."""
import itertools
from pathlib import Path

import pytest
import torch

from model import checkpoint, cost, decoding, frozen
from model.config import ModelConfig
from model.network import Seq2Seq

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
HOSTILE = ModelConfig(vocab_size=2, seq_length=24, hidden_dim=256)  # 2^16 continuations of an 8-token prefix


def counting(model):
    """Record the rows of every decoder call decoding makes (through the model's model.frozen.Frozen)."""
    calls = []
    net = frozen.of(model)
    step = net.step

    def counted(tokens, state, memory):
        calls.append(tokens.size(0))
        return step(tokens, state, memory)

    net.step = counted  # type: ignore[method-assign]
    return calls


def test_a_small_vocabulary_with_long_sequences_and_a_large_hidden_size_gets_a_bounded_beam():
    old_rule_exact = HOSTILE.vocab_size ** 16 <= cost.EXACT_LIMIT
    plan = decoding.topk_plan(HOSTILE, 8, 5)
    exact = cost._search_cost(HOSTILE, 8, cost._levels(2, 16, None, cap=2**62), 5)
    assert old_rule_exact and exact.work > 100 * cost.TOPK_WORK_BUDGET  # what the count alone let through
    assert not plan.exact and plan.within_budget and plan.width >= 5
    assert plan.work <= cost.TOPK_WORK_BUDGET and plan.bytes <= cost.TOPK_BYTES_BUDGET
    torch.manual_seed(0)
    model = Seq2Seq(HOSTILE).eval()
    calls = counting(model)
    got = decoding.topk(model, [[1, 0, 1, 1, 0, 0, 1, 0]], 5)[0]
    assert sum(calls) == plan.rows and max(calls) <= plan.chunk_rows  # the cost model counts the real work
    assert len({tuple(c.sequence) for c in got}) == 5
    assert [c.score for c in got] == sorted((c.score for c in got), reverse=True)


def test_a_plan_that_cannot_fit_says_so_and_an_explicit_width_is_kept():
    assert not decoding.topk_plan(HOSTILE, 8, 50).within_budget  # even a beam of width k is too dear
    plan = decoding.topk_plan(HOSTILE, 8, 3, beam_width=64)
    assert plan.width == 64 and not plan.exact
    tight = decoding.topk_plan(ModelConfig(), 1, 5, budget=1_000_000)
    assert not tight.exact and tight.work <= 1_000_000


def test_the_shipped_model_stays_exact_and_equals_brute_force_enumeration():
    model = checkpoint.load(WEIGHTS / "default.pt").model
    plan = decoding.topk_plan(model.config, 1, 5)
    assert plan.exact and plan.rows == 1 + 10 + 100 + 1000
    calls = counting(model)
    got = decoding.topk(model, [[7]], 5)[0]
    assert sum(calls) == plan.rows
    seqs = [[7, *c] for c in itertools.product(range(10), repeat=4)]
    scores = decoding.score(model, [[7]] * len(seqs), seqs)
    best = sorted(zip(scores, seqs), key=lambda x: -x[0])[:5]
    assert [c.sequence for c in got] == [s for _, s in best]
    assert [c.score for c in got] == pytest.approx([s for s, _ in best], abs=1e-5)


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("chunk", [3, 40])  # part of one prefix's rows per call; several prefixes per call
def test_chunked_decoding_equals_unchunked(attention, chunk):
    torch.manual_seed(1)
    model = Seq2Seq(ModelConfig(vocab_size=4, seq_length=5, embedding_dim=8, hidden_dim=16, attention=attention)).eval()
    prefixes = [[1], [2], [3], [0], [1, 2], [3, 1], [2, 2, 1], [1, 2, 3, 0, 1]]
    calls = counting(model)
    for beam in (None, 5):
        whole = decoding.topk(model, prefixes, 6, beam_width=beam)
        calls.clear()
        parts = decoding.topk(model, prefixes, 6, beam_width=beam, chunk=chunk)
        assert max(calls) <= chunk
        for w, p in zip(whole, parts):
            assert [c.sequence for c in p] == [c.sequence for c in w]
            assert [c.score for c in p] == pytest.approx([c.score for c in w], abs=1e-5)
    src, lengths = decoding.pad_prefixes(prefixes)
    known = torch.tensor([decoding.known_tokens(len(p), 5) for p in prefixes])
    whole = decoding.greedy_tensor(model, src, lengths, known, want_attention=True)
    parts = decoding.greedy_tensor(model, src, lengths, known, want_attention=True, chunk=3)
    assert torch.equal(whole[0], parts[0])
    for a, b in zip(whole[1:], parts[1:]):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)


def test_greedy_cost_grows_with_the_batch_and_the_model():
    small, big = ModelConfig(), ModelConfig(hidden_dim=256)
    one = decoding.greedy_cost(small, [1])
    assert one.rows == 4 and decoding.greedy_cost(small, [1] * 10).work == pytest.approx(10 * one.work)
    assert decoding.greedy_cost(big, [1]).work > 30 * one.work
    assert decoding.greedy_cost(small, [5] * 3).work > decoding.greedy_cost(small, [1] * 3).work
    assert decoding.greedy_cost(small, 7).rows == 28  # a count is priced at full length
