"""The metrics a model is judged by, on a fixed held-out set, so two models can be compared on the same one.

- Random data (the seed's copy task): free-running greedy exact match, the decoder given only the first token.
- A corpus: top-1 agreement, whether greedy decoding of each distinct prefix gives one of that prefix's
  most frequent sequences in the corpus (what a predictive keyboard must get right).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .config import ModelConfig
from .data import best_continuations, random_sequences
from .decoding import greedy_tensor, known_tokens, pad_prefixes
from .network import Seq2Seq

HELD_OUT_SEED_OFFSET = 1_000_003  # the held-out stream never coincides with the training stream


@dataclass
class EvalSet:
    """Prefixes, how many of their tokens the decoder is given, and what counts as right."""

    kind: str  # "seq_acc" or "top1_agreement"
    src: Tensor
    lengths: Tensor | None
    known: Tensor
    targets: list[set[tuple[int, ...]]] | Tensor  # a tensor for exact match, sets of accepted sequences for a corpus

    def __len__(self) -> int:
        return self.src.size(0)

    def head(self, n: int) -> EvalSet:
        """The first n items: a cheap screen before the full evaluation."""
        if n >= len(self):
            return self
        lengths = None if self.lengths is None else self.lengths[:n]
        return EvalSet(self.kind, self.src[:n], lengths, self.known[:n], self.targets[:n])


def copy_task_set(config: ModelConfig, size: int, seed: int) -> EvalSet:
    gen = torch.Generator().manual_seed(seed + HELD_OUT_SEED_OFFSET)
    return copy_set(random_sequences(size, config, gen))


def copy_set(sequences: Tensor) -> EvalSet:
    """The seed's task on given sequences: the encoder reads each whole, the decoder rebuilds it from its first token."""
    return EvalSet("seq_acc", sequences, None, torch.ones(sequences.size(0), dtype=torch.long), sequences)


def corpus_set(config: ModelConfig, sequences: list[list[int]], prefix_lengths: tuple[int, ...]) -> EvalSet:
    best = best_continuations(sequences, prefix_lengths)
    prefixes = sorted(best, key=lambda p: (len(p), p))
    src, lengths = pad_prefixes(prefixes)
    known = torch.tensor([known_tokens(len(p), config.seq_length) for p in prefixes])
    uniform = None if bool((lengths == lengths[0]).all()) else lengths
    return EvalSet("top1_agreement", src, uniform, known, [best[p] for p in prefixes])


@torch.inference_mode()
def evaluate(model: Seq2Seq, eval_set: EvalSet, chunk: int = 20_000) -> float:
    """Fraction of the set the model gets right."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(eval_set), chunk):
        part = slice(start, start + chunk)
        lengths = None if eval_set.lengths is None else eval_set.lengths[part]
        seq, _, _, _ = greedy_tensor(model, eval_set.src[part].to(device), lengths, eval_set.known[part])
        if isinstance(eval_set.targets, Tensor):
            correct += int((seq.cpu() == eval_set.targets[part]).all(1).sum())
        else:
            rows = [tuple(r) for r in seq.cpu().tolist()]
            correct += sum(r in ok for r, ok in zip(rows, eval_set.targets[part]))
    model.train(was_training)
    return correct / len(eval_set)
