"""The network: both variants, the seed's shapes, prefixes of any length in one batch."""
import pytest
import torch

from model.config import ModelConfig
from model.network import Seq2Seq


@pytest.mark.parametrize("attention", [False, True])
def test_forward_gives_logits_for_every_target_position(attention):
    model = Seq2Seq(ModelConfig(attention=attention))
    x = torch.randint(0, 10, (8, 5))
    assert model(x, x).shape == (8, 4, 10)
    assert model(x, x, teacher_forcing=[False, True, False]).shape == (8, 4, 10)


def test_layers_have_the_seeds_shapes():
    plain = Seq2Seq(ModelConfig(attention=False))
    att = Seq2Seq(ModelConfig(attention=True))
    assert plain.decoder.lstm.input_size == 16 and plain.decoder.fc.in_features == 32
    assert att.decoder.lstm.input_size == 16 + 32 and att.decoder.fc.in_features == 64
    assert att.decoder.attention.attn.weight.shape == (32, 64)
    assert att.decoder.attention.v.bias is None


@pytest.mark.parametrize("attention", [False, True])
def test_padding_never_leaks_into_a_shorter_prefix(attention):
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(attention=attention)).eval()
    trg = torch.tensor([[3, 1, 4, 1, 5], [2, 7, 1, 8, 2]])
    lengths = torch.tensor([2, 5])
    padded_a = torch.tensor([[3, 1, 0, 0, 0], [2, 7, 1, 8, 2]])
    padded_b = torch.tensor([[3, 1, 9, 9, 9], [2, 7, 1, 8, 2]])
    with torch.no_grad():
        a = model(padded_a, trg, lengths)
        b = model(padded_b, trg, lengths)
        alone = model(torch.tensor([[3, 1]]), trg[:1])
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a[:1], alone, atol=1e-5)


def test_attention_matches_the_seeds_unsplit_formula():
    torch.manual_seed(0)
    att = Seq2Seq(ModelConfig(attention=True)).decoder.attention
    hidden, enc = torch.randn(3, 32), torch.randn(3, 5, 32)
    seed_energy = torch.tanh(att.attn(torch.cat((hidden.unsqueeze(1).repeat(1, 5, 1), enc), dim=2)))
    seed_weights = torch.softmax(att.v(seed_energy).squeeze(2), dim=1)
    assert torch.allclose(att(hidden, att.keys(enc)), seed_weights, atol=1e-6)
