"""A corpus's held-out part: what training stops on, and what a model's figures are measured on.

A corpus that users typed is a sample of their habits, so a model that reproduces it exactly has overfitted:
a sequence seen once is not 1/N likely, and one never seen is not impossible. The split holds out a share of the
corpus's occurrences, drawn at random with the job's seed, so the held-out part is distributed as fresh usage
is: a frequent sequence appears on both sides, as it would tomorrow, and a rare one on one side only.
Holding out whole distinct sequences instead would judge the model on unseen sequences alone and push it to
spread probability too thin.

The split is by index, so training never reads a held-out occurrence (tests/model/test_validation.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import heldout, mixture, ngram
from .config import ModelConfig
from .cost import known_tokens
from .decoding import pad_prefixes
from .network import Seq2Seq

MAX_CHECKED = 2048  # held-out examples the stopping loss reads (a 30,000-sequence corpus holds out 12,000; reading
# 4,096 took 0.17 s a check at width 128, 13 s of a 2,000-step job)
MIN_VALID = 10  # fewer held-out sequences than this say nothing: such a corpus trains on everything
SEED_OFFSET = 7_919  # the split's draw never coincides with the training stream's


@dataclass(frozen=True)
class Split:
    train: list[list[int]]
    valid: list[list[int]]
    valid_index: list[int]  # positions in the corpus of the held-out occurrences


def split(sequences: list[list[int]], fraction: float, seed: int) -> Split | None:
    """Hold out round(fraction * n) occurrences, or None when that is fewer than MIN_VALID."""
    n = len(sequences)
    size = round(n * fraction)
    if size < MIN_VALID or size >= n:
        return None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + SEED_OFFSET)).tolist()
    held = sorted(order[:size])
    held_set = set(held)
    return Split([s for i, s in enumerate(sequences) if i not in held_set], [sequences[i] for i in held], held)


class Checker:
    """The held-out loss: mean -log P(generated digits | prefix) over every held-out (prefix, sequence)."""

    def __init__(self, valid: list[list[int]], prefix_lengths: tuple[int, ...], device: torch.device):
        L = len(valid[0])
        valid = valid[:max(1, MAX_CHECKED // len(prefix_lengths))]  # held out at random already
        prefixes = [s[:p] for p in prefix_lengths for s in valid]
        self.src, self.lengths = pad_prefixes(prefixes, device)
        if bool((self.lengths == self.lengths[0]).all()):
            self.lengths = None  # type: ignore[assignment]
        self.trg = torch.tensor([s for _ in prefix_lengths for s in valid], dtype=torch.long, device=device)
        known = torch.tensor([known_tokens(len(p), L) for p in prefixes], device=device)
        self.generated = torch.arange(1, L, device=device).unsqueeze(0) >= known.unsqueeze(1)

    @torch.no_grad()
    def loss(self, model: Seq2Seq) -> float:
        was_training = model.training
        model.eval()
        logits: Tensor = model(self.src, self.trg, self.lengths)
        logp = torch.log_softmax(logits, dim=2).gather(2, self.trg[:, 1:].unsqueeze(2)).squeeze(2)
        model.train(was_training)
        return float(-(logp * self.generated).sum(1).mean())


def baseline(parts: Split, config: ModelConfig, prefix_length: int = 1) -> ngram.CountModel | None:
    """The best count baseline fitted on the training part and chosen on the held-out part, when its tables fit."""
    if not ngram.fits(config.vocab_size, config.seq_length):
        return None
    return ngram.fit_best(parts.train, parts.valid, config.vocab_size, config.seq_length, prefix_length)


def teacher(parts: Split, config: ModelConfig, base: ngram.CountModel | None,
            prefix_length: int = 1) -> ngram.CountModel | None:
    """What training smooths the network towards: the chain-and-templates mixture (model/mixture.py) when it
    beats the baseline on the held-out part, else the baseline. The baseline stays what the model's figures are
    set against: the question is whether the network beats counting."""
    if base is None or not mixture.fits(config.vocab_size, config.seq_length):
        return base
    mixed, loss = mixture.fit(parts.train, parts.valid, config.vocab_size, config.seq_length, prefix_length)
    return mixed if loss < ngram.mean_nll(base, parts.valid, prefix_length) else base


def refit(model: ngram.CountModel, sequences: list[list[int]]) -> ngram.CountModel:
    """A teacher of the same kind and settings, fitted on other sequences (a small corpus's refit on all of it)."""
    if model.settings.get("kind") == "mixture":
        return mixture.refit(model.settings, sequences, model.vocab_size, model.seq_length)
    return ngram.refit(model, sequences)


def figures(model: Seq2Seq, parts: Split, base: ngram.CountModel | None, prefix_length: int = 1) -> dict:
    """The model's held-out figures (model/heldout.py) beside those of the count baseline (baseline()), keyed
    heldout_* and baseline_*."""
    out: dict = {"validation_sequences": len(parts.valid)}
    mine = heldout.figures(heldout.Neural(model), parts.valid, prefix_length=prefix_length)
    out.update({f"heldout_{k}": v for k, v in mine.items()})
    if base is not None:
        theirs = heldout.figures(base, parts.valid, prefix_length=prefix_length)
        out.update({f"baseline_{k}": v for k, v in theirs.items()})
        out["baseline_name"] = base.name
    return out
