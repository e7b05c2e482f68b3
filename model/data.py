"""Where training examples come from: a corpus of sequences (frequency is the signal) or the seed's generator.

An example is (prefix, sequence): the encoder reads the prefix s[:p], the decoder writes s from s[0].
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import ModelConfig


class DataError(ValueError):
    """A dataset that does not fit the model; the message names the offending sequence."""


@dataclass(frozen=True)
class Batch:
    src: Tensor  # (batch, max prefix length), right-padded with zeros
    lengths: Tensor | None  # (batch,) on CPU, None when every prefix has the same length
    trg: Tensor  # (batch, seq_length)


def validate_sequences(sequences: list[list[int]], config: ModelConfig) -> Tensor:
    """Check every sequence against the model's length and vocabulary; return them as one tensor."""
    if not sequences:
        raise DataError("the dataset has no sequences")
    for i, seq in enumerate(sequences):
        if not isinstance(seq, (list, tuple)) or len(seq) != config.seq_length:
            raise DataError(f"sequence {i} must be a list of {config.seq_length} tokens, got {seq!r}"[:200])
        for tok in seq:
            if isinstance(tok, bool) or not isinstance(tok, int) or not 0 <= tok < config.vocab_size:
                raise DataError(f"sequence {i} has token {tok!r} outside the vocabulary 0..{config.vocab_size - 1}")
    return torch.tensor(sequences, dtype=torch.long)


def corpus_hash(sequences: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(sequences, separators=(",", ":")).encode()).hexdigest()


def random_sequences(n: int, config: ModelConfig, generator: torch.Generator) -> Tensor:
    """The seed's data: digits 1..vocab-1 (the seed never draws 0)."""
    return torch.randint(1, config.vocab_size, (n, config.seq_length), generator=generator)


def make_batch(sequences: Tensor, prefix_lengths: tuple[int, ...], generator: torch.Generator) -> Batch:
    """Cut each sequence to a prefix of a length drawn from prefix_lengths."""
    if len(prefix_lengths) == 1:
        p = prefix_lengths[0]
        return Batch(sequences[:, :p].contiguous(), None, sequences)
    choices = torch.tensor(prefix_lengths, dtype=torch.long)
    lengths = choices[torch.randint(len(prefix_lengths), (sequences.size(0),), generator=generator)]
    width = int(lengths.max())
    keep = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    src = sequences[:, :width] * keep
    return Batch(src, lengths, sequences)


def best_continuations(sequences: list[list[int]], prefix_lengths: tuple[int, ...]) -> dict[tuple[int, ...], set[tuple[int, ...]]]:
    """For every prefix in the corpus: the set of its most frequent whole sequences (ties kept)."""
    counts: dict[tuple[int, ...], Counter] = {}
    for seq in sequences:
        full = tuple(seq)
        for p in prefix_lengths:
            counts.setdefault(full[:p], Counter())[full] += 1
    best = {}
    for prefix, counter in counts.items():
        top = max(counter.values())
        best[prefix] = {s for s, n in counter.items() if n == top}
    return best
