"""model.frozen runs the module's arithmetic: a step and an encoding equal the nn.Module's to float rounding, for
prefixes of mixed lengths too, and a frozen model follows its weights when training changes them."""
import copy

import pytest
import torch

from model import decoding, frozen
from model.config import ModelConfig
from model.network import Seq2Seq

PREFIXES = [[1], [2, 3], [0, 1, 2], [3, 3, 1, 0], [2], [1, 0, 0]]


def model_of(attention: bool, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(ModelConfig(vocab_size=4, seq_length=5, embedding_dim=8, hidden_dim=16, attention=attention)).eval()


@pytest.mark.parametrize("attention", [False, True])
@torch.inference_mode()
def test_encoding_mixed_lengths_and_a_step_equal_the_modules(attention):
    model = model_of(attention)
    src, lengths = decoding.pad_prefixes(PREFIXES)
    (h, c), memory = model.encode(src, lengths)
    (fh, fc), fmemory = frozen.of(model).encode(src, lengths)
    assert torch.allclose(fh, h, atol=1e-6) and torch.allclose(fc, c, atol=1e-6)
    if attention:
        assert torch.allclose(fmemory.outputs, memory.outputs, atol=1e-6)
        assert torch.equal(fmemory.mask, memory.mask)
    tokens = src[:, 0]
    logits, (h2, _), weights = model.decoder.step(tokens, (h, c), memory)
    flogits, (fh2, _), fweights = frozen.of(model).step(tokens, (h, c), memory)
    assert torch.equal(flogits, logits) and torch.equal(fh2, h2)
    assert (weights is None) == (fweights is None) and (weights is None or torch.equal(fweights, weights))


def test_a_frozen_model_sees_training_and_replaced_weights():
    model = model_of(True)
    before = decoding.greedy(model, PREFIXES)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # in place, as an optimizer step
    moved = decoding.greedy(model, PREFIXES)
    assert moved == decoding.greedy(copy.deepcopy(model), PREFIXES)  # a copy decodes afresh: the same answers
    assert frozen.of(model) is frozen.of(model)
    other = model_of(True, seed=1)
    model.load_state_dict(other.state_dict(), assign=True)  # new tensors: a new Frozen
    assert [d.sequence for d in decoding.greedy(model, PREFIXES)] == [d.sequence for d in decoding.greedy(other, PREFIXES)]
    assert [d.score for d in moved] != [d.score for d in before]
