"""The trainer: reproducible, reports progress through a callback, stops at a target, cancels cooperatively.

Same configs, seed and device give the same weights: the initial weights, the data stream and the
teacher-forcing choices each draw from their own generator seeded from the config.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .calibration import calibration
from .config import ModelConfig, TrainConfig
from .data import Batch, DataError, corpus_hash, make_batch, random_sequences, validate_sequences
from .evaluation import EvalSet, copy_set, copy_task_set, corpus_set, evaluate
from .network import Seq2Seq
from .optim import Adam

MAX_HISTORY = 400  # points kept for the curves; older ones are thinned so a million steps stay light
REPORT_EVERY_S = 0.5  # progress between history points, for jobs whose history points are far apart
SCREEN_SIZE = 1_000  # held-out items checked before the full set, so evaluations stay cheap while far from target


@dataclass(frozen=True)
class Progress:
    """How far a run is; the job protocol (app/jobs/protocol.py) sends this very type, field by field name."""

    step: int
    total_steps: int
    loss: float
    accuracy: float | None  # latest evaluation, None before the first
    elapsed_seconds: float
    eta_seconds: float


@dataclass
class TrainResult:
    model: Seq2Seq
    metrics: dict
    history: list[dict] = field(default_factory=list)
    status: str = "completed"  # completed | target_reached | cancelled
    data: dict = field(default_factory=dict)  # a description of the data, stored in the checkpoint


class Dataset:
    """Training sequences: a fixed corpus sampled with replacement, or the seed's fresh random digits."""

    def __init__(self, config: ModelConfig, sequences: list[list[int]] | None = None):
        self.config = config
        self.sequences = sequences
        self.table = validate_sequences(sequences, config) if sequences is not None else None

    @property
    def is_random(self) -> bool:
        return self.table is None

    def default_prefix_lengths(self) -> tuple[int, ...]:
        L = self.config.seq_length
        return (L,) if self.is_random else tuple(range(1, L + 1))

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.table is None:
            return random_sequences(n, self.config, gen)
        return self.table[torch.randint(self.table.size(0), (n,), generator=gen)]

    def full_batch(self, prefix_lengths: tuple[int, ...], limit: int) -> tuple[Batch, torch.Tensor] | None:
        """Every distinct (prefix, sequence) example of a corpus once, weighted by its frequency, when there are
        at most `limit` of them: the exact gradient of the expected loss, with none of a sample's noise."""
        if self.table is None or limit < 1:
            return None
        distinct, counts = torch.unique(self.table, dim=0, return_counts=True)
        if distinct.size(0) * len(prefix_lengths) > limit:
            return None
        width = max(prefix_lengths)
        srcs, lengths = [], []
        for p in prefix_lengths:
            srcs.append(torch.nn.functional.pad(distinct[:, :p], (0, width - p)))
            lengths.append(torch.full((distinct.size(0),), p, dtype=torch.long))
        n = len(prefix_lengths)
        weights = (counts.float() / (counts.sum() * n)).repeat(n)
        batch = Batch(torch.cat(srcs), torch.cat(lengths) if n > 1 else None, distinct.repeat(n, 1))
        return batch, weights

    def eval_set(self, train: TrainConfig, prefix_lengths: tuple[int, ...]) -> EvalSet:
        if self.sequences is None:
            return copy_task_set(self.config, train.eval_size, train.seed)
        return corpus_set(self.config, self.sequences, prefix_lengths)

    def describe(self) -> dict:
        if self.sequences is None:
            return {"kind": "random", "generator": "seed: digits 1..vocab-1, fresh every step"}
        return {"kind": "corpus", "sequences": len(self.sequences), "sha256": corpus_hash(self.sequences)}


def record_point(history: list[dict], step: int, loss: float, accuracy: float | None) -> None:
    """Append a point to a training curve, thinning older points so it never exceeds MAX_HISTORY."""
    history.append({"step": step, "loss": loss, "accuracy": accuracy})
    if len(history) > MAX_HISTORY:  # drop every other older point: even coverage, bounded size
        history[:-1] = history[:-1:2]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available")
    return torch.device(name)


def build_model(config: ModelConfig, seed: int, device: torch.device) -> Seq2Seq:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Seq2Seq(config)
    return model.to(device)


def train(model_config: ModelConfig, train_config: TrainConfig, dataset: Dataset, device: str = "auto",
          on_progress: Callable[[Progress], None] | None = None, should_stop: Callable[[], bool] | None = None,
          progress_every: int | None = None) -> TrainResult:
    dev = resolve_device(device)
    L = model_config.seq_length
    prefix_lengths = train_config.prefix_lengths or dataset.default_prefix_lengths()
    if max(prefix_lengths) > L:
        raise DataError(f"prefix_lengths {list(prefix_lengths)} exceed the sequence length {L}")
    model = build_model(model_config, train_config.seed, dev)
    model.train()
    optimizer = Adam(model.parameters(), lr=train_config.learning_rate)
    started = time.perf_counter()  # after setup, as the seed's reference times it
    data_gen = torch.Generator().manual_seed(train_config.seed)
    forcing_rng = random.Random(train_config.seed)
    ratio = train_config.teacher_forcing_ratio
    full = dataset.full_batch(prefix_lengths, train_config.full_batch)
    if full is not None:
        full_src, full_trg, weights = full[0].src.to(dev), full[0].trg.to(dev), full[1].to(dev)
    eval_set = dataset.eval_set(train_config, prefix_lengths)
    screen = eval_set.head(SCREEN_SIZE)
    target = train_config.target_accuracy
    total = train_config.steps
    every = progress_every or max(1, total // 200)
    history: list[dict] = []
    accuracy: float | None = None
    status = "completed"
    train_seconds = 0.0
    loss_value = float("nan")
    step = 0

    last_report = [time.perf_counter()]

    def report(step: int, loss: float) -> None:
        if on_progress is None:
            return
        last_report[0] = time.perf_counter()
        elapsed = last_report[0] - started
        on_progress(Progress(step=step, total_steps=total, loss=loss, accuracy=accuracy, elapsed_seconds=elapsed,
                             eta_seconds=elapsed / step * (total - step)))

    for step in range(1, total + 1):
        if should_stop is not None and should_stop():
            status = "cancelled"
            step -= 1
            break
        t0 = time.perf_counter()
        forcing = [forcing_rng.random() < ratio for _ in range(L - 2)]
        if full is None:
            batch = make_batch(dataset.sample(train_config.batch_size, data_gen), prefix_lengths, data_gen)
            logits = model(batch.src.to(dev), batch.trg.to(dev), batch.lengths, forcing)
            loss = F.cross_entropy(logits.reshape(-1, model_config.vocab_size), batch.trg[:, 1:].reshape(-1).to(dev))
        else:
            logits = model(full_src, full_trg, full[0].lengths, forcing)
            per_token = F.cross_entropy(logits.reshape(-1, model_config.vocab_size), full_trg[:, 1:].reshape(-1),
                                        reduction="none")
            loss = (per_token.view(full_trg.size(0), L - 1).mean(1) * weights).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(train_config.learning_rate_at(step))
        train_seconds += time.perf_counter() - t0
        if step % train_config.eval_every == 0 and step < total:
            # The cheap screen gives the curve its accuracy; only a screen that meets the target earns the
            # full held-out evaluation that decides whether to stop.
            loss_value = loss.item()
            accuracy = evaluate(model, screen)
            if target is not None and accuracy >= target and screen is not eval_set:
                accuracy = evaluate(model, eval_set)
            record_point(history, step, loss_value, accuracy)
            report(step, loss_value)
            if target is not None and accuracy >= target:
                status = "target_reached"
                break
        elif step % every == 0 or step == total:
            loss_value = loss.item()
            record_point(history, step, loss_value, accuracy)
            report(step, loss_value)
        elif on_progress is not None and time.perf_counter() - last_report[0] > REPORT_EVERY_S:
            report(step, loss.item())  # long jobs still show life between history points

    model.eval()
    if status != "target_reached" or accuracy is None:
        accuracy = evaluate(model, eval_set)
    if step > 0:
        loss_value = loss.item()
    metrics = {
        "accuracy": accuracy,
        eval_set.kind: accuracy,
        "eval_size": len(eval_set),
        "loss": loss_value,
        "steps": step,
        "train_seconds": round(train_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
        "device": str(dev),
    }
    if dataset.sequences is not None:  # a corpus: the seed's copy task on its distinct sequences, for reference
        metrics["seq_acc"] = evaluate(model, copy_set(torch.unique(dataset.table, dim=0)))
        metrics.update(calibration(model, dataset.sequences, prefix_lengths))
        metrics["full_batch_examples"] = 0 if full is None else full[1].numel()
    if not history or history[-1]["step"] != step:
        history.append({"step": step, "loss": loss_value, "accuracy": accuracy})
    else:
        history[-1]["accuracy"] = accuracy
    report(max(step, 1), loss_value)
    return TrainResult(model, metrics, history, status, dataset.describe())
