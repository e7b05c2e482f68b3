"""Decoding: exact top-k is brute-force enumeration; beam search agrees where the exact path applies."""
import itertools

import pytest
import torch

from model import decoding
from model.config import ModelConfig
from model.network import Seq2Seq

SMALL = ModelConfig(vocab_size=4, seq_length=4, embedding_dim=8, hidden_dim=16)


def small_model(attention: bool, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(ModelConfig(**{**SMALL.to_dict(), "attention": attention})).eval()
    with torch.no_grad():  # sharpen the random weights so the ranking is not a near tie
        for p in model.parameters():
            p.mul_(3)
    return model


def brute_force(model, prefix, k):
    known = decoding.known_tokens(len(prefix), model.config.seq_length)
    free = model.config.seq_length - known
    seqs = [prefix[:known] + list(c) for c in itertools.product(range(model.config.vocab_size), repeat=free)]
    scores = decoding.score(model, [prefix] * len(seqs), seqs)
    return sorted(zip(scores, seqs), key=lambda x: -x[0])[:k]


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("prefix", [[1], [2, 3], [0, 1, 2], [1, 2, 3, 0]])
def test_exact_topk_equals_brute_force_enumeration(attention, prefix):
    model = small_model(attention)
    expected = brute_force(model, prefix, 6)
    got = decoding.topk(model, [prefix], 6)[0]
    assert [c.sequence for c in got] == [s for _, s in expected]
    assert [c.score for c in got] == pytest.approx([s for s, _ in expected], abs=1e-5)


@pytest.mark.parametrize("attention", [False, True])
def test_beam_search_agrees_with_exact_topk(attention):
    model = small_model(attention, seed=3)
    for prefix in ([1], [3, 2]):
        exact = decoding.topk(model, [prefix], 5)[0]
        wide = decoding.topk(model, [prefix], 5, beam_width=64)[0]  # width >= every partial sequence: no pruning
        assert [c.sequence for c in wide] == [c.sequence for c in exact]
        narrow = decoding.topk(model, [prefix], 3, beam_width=8)[0]
        assert narrow[0].sequence == exact[0].sequence
        assert [c.score for c in narrow] == sorted((c.score for c in narrow), reverse=True)


def test_beam_search_is_used_beyond_the_exact_limit():
    model = small_model(True)
    beam = decoding.topk(model, [[1]], 3, exact_limit=10)[0]
    exact = decoding.topk(model, [[1]], 3)[0]
    assert len(beam) == 3 and beam[0].sequence == exact[0].sequence


def test_topk_returns_distinct_sequences_starting_with_the_prefix_best_first():
    model = Seq2Seq(ModelConfig()).eval()
    for prefix in ([7], [7, 2], [1, 2, 3]):
        got = decoding.topk(model, [prefix], 20)[0]
        assert len(got) == 20
        assert len({tuple(c.sequence) for c in got}) == 20
        assert all(c.sequence[: len(prefix)] == prefix for c in got)
        assert [c.score for c in got] == sorted((c.score for c in got), reverse=True)


def test_topk_returns_fewer_when_fewer_exist():
    model = small_model(False)
    assert len(decoding.topk(model, [[1, 2, 3]], 50)[0]) == 4


@pytest.mark.parametrize("attention", [False, True])
def test_greedy_is_the_first_choice_at_every_step_and_batches_like_single_calls(attention):
    model = small_model(attention, seed=1)
    prefixes = [[1], [2, 3], [0, 1, 2], [3], [1, 2, 3, 0]]
    batch = decoding.greedy(model, prefixes, want_attention=True)
    for prefix, got in zip(prefixes, batch):
        alone = decoding.greedy(model, [prefix], want_attention=True)[0]
        assert got.sequence == alone.sequence
        assert got.score == pytest.approx(alone.score, abs=1e-5)
        known = decoding.known_tokens(len(prefix), 4)
        assert got.sequence[:known] == prefix[:known]
        assert len(got.token_probs) == 4 - known
        assert got.score == pytest.approx(decoding.score(model, [prefix], [got.sequence])[0], abs=1e-5)
        assert got.score == pytest.approx(sum(torch.log(torch.tensor(got.token_probs))).item(), abs=1e-5)
        if attention:
            assert len(got.attention) == 4 - known and all(len(row) == len(prefix) for row in got.attention)
            assert all(sum(row) == pytest.approx(1.0, abs=1e-5) for row in got.attention)
        else:
            assert got.attention is None
    top1 = decoding.topk(model, [[2, 3]], 1)[0][0]
    assert top1.score >= batch[1].score - 1e-6


@pytest.mark.parametrize("prefix,message", [([], "1 to 4 tokens"), ([1, 2, 3, 0, 1], "1 to 4 tokens"), ([4], "outside the vocabulary")])
def test_bad_prefixes_are_refused_with_the_reason(prefix, message):
    with pytest.raises(decoding.PrefixError, match=message):
        decoding.greedy(small_model(False), [prefix])
    with pytest.raises(decoding.PrefixError, match=message):
        decoding.topk(small_model(False), [prefix], 3)


@pytest.mark.parametrize("attention", [False, True])
def test_bulk_results_are_identical_to_one_by_one_results(attention):
    model = small_model(attention, seed=2)
    gen = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 5, (40,), generator=gen).tolist()
    prefixes = [torch.randint(0, 4, (n,), generator=gen).tolist() for n in sizes]
    for batch in (prefixes, [p for p in prefixes if len(p) == 2]):  # mixed lengths, and one length
        bulk = decoding.greedy(model, batch, want_attention=True)
        alone = [decoding.greedy(model, [p], want_attention=True)[0] for p in batch]
        for b, a in zip(bulk, alone):
            assert b.sequence == a.sequence and b.score == pytest.approx(a.score, abs=1e-6)
            assert b.token_probs == pytest.approx(a.token_probs, abs=1e-6)
            assert (b.attention is None) == (a.attention is None) == (not attention)
            if attention:
                assert len(b.attention) == len(a.attention)
                for rb, ra in zip(b.attention, a.attention):
                    assert rb == pytest.approx(ra, abs=1e-6)
        top = decoding.topk(model, batch, 3)
        for prefix, t in zip(batch, top):
            one = decoding.topk(model, [prefix], 3)[0]
            assert [c.sequence for c in t] == [c.sequence for c in one]
            assert [c.score for c in t] == pytest.approx([c.score for c in one], abs=1e-6)


def test_a_bad_prefix_anywhere_in_a_large_batch_is_named_like_a_lone_one():
    model = small_model(False)
    good = [[1, 2]] * 1000
    for bad, message in (([1, 4], "token 4 is outside the vocabulary 0..3"), ([-1], "token -1 is outside"),
                         ([], "1 to 4 tokens"), ([1, 2, 3, 0, 1], "1 to 4 tokens")):
        with pytest.raises(decoding.PrefixError, match=message):
            decoding.greedy(model, [*good[:500], bad, *good[500:]])
        with pytest.raises(decoding.PrefixError, match=message):
            decoding.topk(model, [*good, bad], 2)
    with pytest.raises(decoding.PrefixError, match="integers"):
        decoding.greedy(model, [[1, 2.5]])
    assert decoding.greedy(model, []) == [] and decoding.topk(model, [], 3) == []
