"""The seed's LSTM encoder-decoder, with and without its additive attention, in one module.

Layer names and shapes follow the seed (Embedding -> LSTM -> Linear; attention Linear(2H -> H), tanh,
Linear(H -> 1, no bias)), so its weights would load here. Two things are arranged for speed without
changing the mathematics: attention splits its first Linear so the encoder half is computed once per
sequence instead of once per decoder step, and small-batch decoder steps call the LSTM cell directly.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig

State = tuple[Tensor, Tensor]  # (h, c), each (batch, hidden)
# One decoder step runs the bare LSTM cell for small batches (less overhead) and the fused LSTM kernel for
# large ones (faster arithmetic): measured on a 2-core CPU, 46 vs 130 us at batch 64, 1.4 vs 0.9 ms at 4,096.
FUSED_LSTM_MIN_BATCH = 512


class Memory(NamedTuple):
    """What the decoder attends over: encoder outputs, their precomputed attention keys, padding mask.

    A decoder step may run N rows per source sequence (the partial sequences of a search): rows are ordered
    sequence-major, and the N rows of sequence b share memory[b] by broadcasting, never by copies.
    """

    outputs: Tensor  # (batch, src_len, hidden)
    keys: Tensor  # (batch, src_len, hidden): the encoder half of attention's first Linear, plus its bias
    mask: Tensor | None  # (batch, src_len) True where a position is padding

    def slice(self, start: int, stop: int) -> Memory:
        mask = None if self.mask is None else self.mask[start:stop]
        return Memory(self.outputs[start:stop], self.keys[start:stop], mask)


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True)
        self.dropout = 0.0  # set by training; not a weight, so checkpoints are unaffected

    def forward(self, src: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        """Encode right-padded prefixes; `lengths` (on CPU) is needed only when they differ."""
        emb = self.embedding(src)
        if self.dropout:
            emb = F.dropout(emb, self.dropout, self.training)
        if lengths is None or bool((lengths == src.size(1)).all()):
            outputs, (h, c) = self.lstm(emb)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
            packed_out, (h, c) = self.lstm(packed)
            outputs, _ = nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))
        return outputs, (h[0], c[0])


class Attention(nn.Module):
    """Additive attention: softmax(v . tanh(W [hidden; encoder_output] + b)) over source positions."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.attn = nn.Linear(hidden_dim * 2, hidden_dim)
        self.v = nn.Linear(hidden_dim, 1, bias=False)

    def keys(self, encoder_outputs: Tensor) -> Tensor:
        return F.linear(encoder_outputs, self.attn.weight[:, self.hidden_dim :], self.attn.bias)

    def forward(self, hidden: Tensor, keys: Tensor, mask: Tensor | None = None) -> Tensor:
        """Weights (B*N, src_len) for hidden (B*N, H), N rows per sequence of keys (B, src_len, H)."""
        return attend(self.attn.weight[:, : self.hidden_dim], self.v.weight, hidden, keys, mask)


def attend(query_weight: Tensor, v: Tensor, hidden: Tensor, keys: Tensor, mask: Tensor | None) -> Tensor:
    """Attention's arithmetic on its weights (the query half of its first Linear, and v), for modules and frozen
    weights alike."""
    B, S, H = keys.shape
    query = F.linear(hidden, query_weight).view(B, -1, 1, H)
    energy = torch.tanh(keys.unsqueeze(1) + query)  # (B, N, S, H): keys broadcast over the N rows
    scores = F.linear(energy, v).squeeze(3)
    if mask is not None:
        scores = scores.masked_fill(mask.unsqueeze(1), float("-inf"))
    return torch.softmax(scores, dim=2).view(-1, S)


class DecoderWeights(NamedTuple):
    """One decoder step's tensors. A Decoder gathers its parameters into one per call (training: gradients flow);
    model.frozen keeps one per loaded model, so inference skips the per-call module machinery."""

    embedding: Tensor
    query: Tensor | None  # attention's query half of its first Linear, None without attention
    v: Tensor | None
    lstm: tuple[Tensor, Tensor, Tensor, Tensor]  # weight_ih, weight_hh, bias_ih, bias_hh
    fused: nn.LSTM  # the same LSTM, called whole for large batches
    fc_weight: Tensor
    fc_bias: Tensor


def decoder_step(w: DecoderWeights, tokens: Tensor, state: State, memory: Memory | None,
                 dropout: float = 0.0, training: bool = False) -> tuple[Tensor, State, Tensor | None]:
    """One decoder step for rows of previous tokens: logits (rows, vocab), new state, attention.

    rows may be a multiple N of the memory's batch: N rows per source sequence, sequence-major."""
    h, c = state
    emb = F.embedding(tokens, w.embedding)
    if dropout:
        emb = F.dropout(emb, dropout, training)
    weights = context = None
    if w.query is not None:
        assert memory is not None and w.v is not None, "an attention decoder needs the encoder's memory"
        weights = attend(w.query, w.v, h, memory.keys, memory.mask)
        B, S, H = memory.outputs.shape
        context = torch.bmm(weights.view(B, -1, S), memory.outputs).view(-1, H)
        emb = torch.cat((emb, context), dim=1)
    if emb.size(0) >= FUSED_LSTM_MIN_BATCH:
        _, (h, c) = w.fused(emb.unsqueeze(1), (h.unsqueeze(0), c.unsqueeze(0)))
        h, c = h[0], c[0]
    else:
        h, c = torch._VF.lstm_cell(emb, (h, c), *w.lstm)
    out = h if context is None else torch.cat((h, context), dim=1)
    if dropout:
        out = F.dropout(out, dropout, training)
    return F.linear(out, w.fc_weight, w.fc_bias), (h, c), weights


class Decoder(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, attention: bool):
        super().__init__()
        self.attention = Attention(hidden_dim) if attention else None
        context = hidden_dim if attention else 0
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim + context, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim + context, vocab_size)
        self.dropout = 0.0  # on the embeddings and on what the output layer reads, while training

    def step(self, tokens: Tensor, state: State, memory: Memory | None) -> tuple[Tensor, State, Tensor | None]:
        """One decoder step (decoder_step) with this module's parameters and dropout."""
        return decoder_step(self.weights(), tokens, state, memory, self.dropout, self.training)

    def weights(self) -> DecoderWeights:
        attention, lstm = self.attention, self.lstm
        # nn.Module's attributes are typed Tensor | Module: these are the layers' parameters.
        return DecoderWeights(
            self.embedding.weight,
            None if attention is None else attention.attn.weight[:, : attention.hidden_dim],
            None if attention is None else attention.v.weight,
            (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0),  # type: ignore[arg-type]
            lstm, self.fc.weight, self.fc.bias)

    def teacher_forced(self, inputs: Tensor, state: State) -> Tensor:
        """All steps in one LSTM call; only the plain decoder allows it (attention needs each step's state)."""
        assert self.attention is None
        h, c = state
        emb = self.embedding(inputs)
        if self.dropout:
            emb = F.dropout(emb, self.dropout, self.training)
        outputs, _ = self.lstm(emb, (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()))
        if self.dropout:
            outputs = F.dropout(outputs, self.dropout, self.training)
        return self.fc(outputs)


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.vocab_size, config.embedding_dim, config.hidden_dim)
        self.decoder = Decoder(config.vocab_size, config.embedding_dim, config.hidden_dim, config.attention)

    def encode(self, src: Tensor, lengths: Tensor | None = None) -> tuple[State, Memory | None]:
        outputs, state = self.encoder(src, lengths)
        if self.decoder.attention is None:
            return state, None
        mask = None
        if lengths is not None and bool((lengths != src.size(1)).any()):
            positions = torch.arange(src.size(1), device=src.device)
            mask = positions.unsqueeze(0) >= lengths.to(src.device).unsqueeze(1)
        return state, Memory(outputs, self.decoder.attention.keys(outputs), mask)

    def forward(self, src: Tensor, trg: Tensor, lengths: Tensor | None = None,
                teacher_forcing: list[bool] | None = None) -> Tensor:
        """Logits (batch, L-1, vocab) for target positions 1..L-1, decoding from trg[:, 0] as the seed does.

        teacher_forcing[t-1] says whether step t is fed the true token t-1 (else the model's own guess);
        None means always. One choice per step for the whole batch, as in the seed.
        """
        state, memory = self.encode(src, lengths)
        steps = trg.size(1) - 1
        forced = teacher_forcing is None or all(teacher_forcing)
        if forced and memory is None:
            return self.decoder.teacher_forced(trg[:, :-1], state)
        logits = []
        tokens = trg[:, 0]
        for t in range(1, steps + 1):
            out, state, _ = self.decoder.step(tokens, state, memory)
            logits.append(out)
            if t < steps:
                tokens = trg[:, t] if forced or (teacher_forcing is not None and teacher_forcing[t - 1]) \
                    else out.argmax(1)
        return torch.stack(logits, dim=1)

    def set_dropout(self, p: float) -> None:
        self.encoder.dropout = self.decoder.dropout = p

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
