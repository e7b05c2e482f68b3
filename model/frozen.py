"""Inference on a model's weights gathered once: the decoding loops' encoder and decoder step.

A small batch's decoding is a few dozen tiny tensor operations, and calling them through nn.Module (__call__,
parameter lookups, slicing attention's weight on every step) cost about a third as much again. Frozen keeps a
model's DecoderWeights and runs network.decoder_step on them, the arithmetic the module runs. Prefixes of mixed
lengths are encoded by stepping the LSTM cell with each row's state held past its end, instead of packing
(pack_padded_sequence sorts and copies), for batches small enough that the cell is the faster kernel; the result is
the module's to float rounding. Dropout does not apply: this is for decoding, never training.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

from .network import FUSED_LSTM_MIN_BATCH, Memory, Seq2Seq, State, decoder_step


class Frozen:
    def __init__(self, model: Seq2Seq):
        self._model = weakref.ref(model)  # kept beside the model (of), never keeping it alive
        self.weights = model.decoder.weights()
        lstm = model.encoder.lstm
        self.encoder_lstm: tuple[Tensor, ...] = (
            lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)  # type: ignore[assignment]
        self.storage = _storage(model)

    def step(self, tokens: Tensor, state: State, memory: Memory | None) -> tuple[Tensor, State, Tensor | None]:
        return decoder_step(self.weights, tokens, state, memory)

    def encode(self, src: Tensor, lengths: Tensor | None = None) -> tuple[State, Memory | None]:
        """Seq2Seq.encode; `lengths` (on the CPU) only when they differ."""
        model = self._model()
        assert model is not None, "decoding a model that no longer exists"
        if lengths is None or src.size(0) >= FUSED_LSTM_MIN_BATCH:
            return model.encode(src, lengths)
        B, S = src.shape
        emb = F.embedding(src, model.encoder.embedding.weight)
        live = torch.arange(S).unsqueeze(0) < lengths.unsqueeze(1)  # (B, S): within the row's prefix
        live = live.to(src.device)
        h = c = emb.new_zeros(B, model.config.hidden_dim)
        outputs = []
        for t in range(S):
            h_t, c_t = torch._VF.lstm_cell(emb[:, t], (h, c), *self.encoder_lstm)
            within = live[:, t : t + 1]
            h, c = torch.where(within, h_t, h), torch.where(within, c_t, c)
            outputs.append(h_t)
        attention = model.decoder.attention
        if attention is None:
            return (h, c), None
        out = torch.stack(outputs, dim=1) * live.unsqueeze(2)  # zeros past the end, as pad_packed_sequence gives
        return (h, c), Memory(out, attention.keys(out), ~live)


def _storage(model: Seq2Seq) -> tuple[int, torch.device]:
    weight = model.decoder.fc.weight
    return weight.data_ptr(), weight.device


_FROZEN: weakref.WeakKeyDictionary[Seq2Seq, Frozen] = weakref.WeakKeyDictionary()  # beside, not in, the model:
# a model stays deep-copyable, and its state_dict and checkpoints are as before


def of(model: Seq2Seq) -> Frozen:
    """The model's Frozen, made once. Training updates weights in place, which it sees; weights moved or replaced
    (Module.to, load_state_dict with assign) make a new one."""
    frozen = _FROZEN.get(model)
    if frozen is None or frozen.storage != _storage(model):
        # Made outside inference mode even when decoding asks: a weight view made inside it could not be used
        # again once training had changed its base in place.
        with torch.inference_mode(False):
            frozen = Frozen(model)
        _FROZEN[model] = frozen
    return frozen
