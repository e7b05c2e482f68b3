"""The trainer: reproducible, reports progress through a callback, stops at a target, cancels cooperatively.

Same configs, seed and device give the same weights: the initial weights, the data stream and the
teacher-forcing choices each draw from their own generator seeded from the config.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from . import ngram, validation
from .calibration import calibration
from .config import ModelConfig, TrainConfig
from .data import Batch, DataError, corpus_hash, make_batch, random_sequences, validate_sequences
from .evaluation import EvalSet, copy_set, copy_task_set, corpus_set, evaluate
from .network import Seq2Seq
from .optim import Adam

MAX_HISTORY = 400  # points kept for the curves; older ones are thinned so a million steps stay light
REPORT_EVERY_S = 0.5  # progress between history points, for jobs whose history points are far apart
LR_CUTS, LR_CUT = 2, 0.3  # on a held-out plateau the learning rate falls to 30%, twice; the third plateau stops
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

    def __init__(self, config: ModelConfig, sequences: list[list[int]] | None = None, exact: bool = False):
        self.config = config
        self.sequences = sequences
        # A corpus's counts are a sample of usage (the default: held-out part, smoothing) or an exact table of
        # frequencies to reproduce (no held-out part, no smoothing); no statistic tells them apart.
        self.exact = exact
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
        return {"kind": "corpus", "sequences": len(self.sequences), "sha256": corpus_hash(self.sequences),
                "frequencies": "exact" if self.exact else "sampled"}


def record_point(history: list[dict], step: int, loss: float, accuracy: float | None, **more: float) -> None:
    """Append a point to a training curve, thinning older points so it never exceeds MAX_HISTORY."""
    history.append({"step": step, "loss": loss, "accuracy": accuracy, **more})
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
    """Train on a dataset. A corpus with enough sequences is first split (model/validation.py): training stops on
    the held-out part's loss and keeps the best weights, the held-out figures of the model and of a count
    baseline are measured, and a small corpus is then trained again on everything for as many steps."""
    dev = resolve_device(device)
    L = model_config.seq_length
    prefix_lengths = train_config.prefix_lengths or dataset.default_prefix_lengths()
    if max(prefix_lengths) > L:
        raise DataError(f"prefix_lengths {list(prefix_lengths)} exceed the sequence length {L}")
    started = time.perf_counter()
    clock = _Clock(started, on_progress, train_config.steps if dataset.sequences is None or dataset.exact
                   else train_config.sampled_steps)
    split = None if dataset.sequences is None or dataset.exact else \
        validation.split(dataset.sequences, train_config.validation_fraction, train_config.seed)
    held_out: dict = {}
    if split is None:
        run = _Run(model_config, train_config, dataset, dev, prefix_lengths, clock, should_stop, progress_every)
        run.loop(train_config.steps)
    else:
        fit = Dataset(model_config, split.train)
        continuing = tuple(p for p in prefix_lengths if p < L) or prefix_lengths  # a copy is not a suggestion
        checker = validation.Checker(split.valid, continuing, dev)
        base = validation.baseline(split, model_config, prefix_lengths[0])  # fitted once: the teacher and the figures'
        teacher = validation.teacher(split, model_config, base, prefix_lengths[0]) if train_config.teacher_weight \
            else None
        # Plain maximum likelihood; smoothed towards the teacher (the count baseline, or the chain-and-templates
        # mixture where it does better on the held-out part); and smoothed, with sequences the teacher writes
        # besides the corpus's. The held-out part keeps the best, since which generalizes depends on the
        # data: a chain the network models well can lose by smoothing, noisy templates gain, a small sample gains
        # most from the written sequences and a large one least.
        history: list[dict] = []
        tried: list[_Run] = []
        # A small sample trains on all its examples at every step and is refitted; a large one (30,000 draws of
        # a chain with 810 possible sequences still fit 4,096 examples) takes batches: its gradient is a sample's
        # anyway, and full batches of thousands of rows made a 30,000-sequence job take six minutes.
        small = len(split.train) + len(split.valid) <= train_config.refit_below
        ways: list[tuple[ngram.CountModel | None, int]] = [(None, 0)]
        if teacher is not None:
            ways.append((teacher, 0))
            if small and train_config.teacher_samples:
                ways.append((teacher, train_config.teacher_samples))
            if not small:
                # A large sample's teacher is good: smoothing towards it beat plain likelihood on all four
                # processes of bench/generalization.py at 30,000 sequences (seed 0, widths 32 to 128), so it is
                # the only way tried, and a wider network (model/config.py sampled_defaults) spends the time the
                # plain way took.
                ways = [(teacher, 0)]
        names = ("plain", "smoothed", "written") if ways[0][0] is None else ("smoothed", "written")
        cap = train_config.sampled_steps
        for smoothing, samples in ways:
            offset = sum(r.step for r in tried)
            clock.extend(offset, cap * len(ways) - offset)
            attempt = _Run(model_config, train_config, fit, dev, prefix_lengths, clock, should_stop, progress_every,
                           checker=checker, eval_dataset=dataset, teacher=smoothing, offset=offset, history=history,
                           samples=samples, full_batches=small)
            attempt.loop(cap)
            tried.append(attempt)
            if attempt.status != "completed":
                break
        run = min(tried, key=lambda r: (r.status == "completed", r.best_loss)) if tried[-1].status == "completed" \
            else tried[-1]
        teacher = run.teacher
        held_out = validation.figures(run.model, split, base, prefix_lengths[0])
        held_out.update(best_step=run.best_step, teacher_weight=0.0 if teacher is None else train_config.teacher_weight,
                        teacher_name=None if teacher is None else teacher.name,
                        teacher_samples=run.samples, valid_loss=run.best_loss,
                        **{f"valid_loss_{way}": r.best_loss for way, r in zip(names, tried)})
        done = sum(r.step for r in tried)
        if run.status == "completed" and small:
            clock.extend(done, run.best_step)
            again = None if teacher is None else validation.refit(teacher, split.train + split.valid)
            refit = _Run(model_config, train_config, dataset, dev, prefix_lengths, clock, should_stop,
                         progress_every, offset=done, history=history, teacher=again, samples=run.samples)
            refit.loop(run.best_step)
            held_out["refit_steps"] = refit.step
            if refit.status == "cancelled":
                run.status = "cancelled"
            else:
                run = refit
        else:
            run.offset, run.step = 0, done  # the steps taken, all attempts together
    model, status, step = run.model, run.status, run.offset + run.step
    model.eval()
    eval_set = dataset.eval_set(train_config, prefix_lengths)
    accuracy = run.accuracy if status == "target_reached" and run.accuracy is not None else evaluate(model, eval_set)
    metrics = {
        "accuracy": accuracy,
        eval_set.kind: accuracy,
        "eval_size": len(eval_set),
        "loss": run.loss_value,
        "steps": step,
        "train_seconds": round(clock.train_seconds, 3),
        "total_seconds": round(time.perf_counter() - started, 3),
        "device": str(dev),
        **held_out,
    }
    if dataset.sequences is not None:  # a corpus: the seed's copy task on its distinct sequences, for reference
        metrics["seq_acc"] = evaluate(model, copy_set(torch.unique(dataset.table, dim=0)))
        metrics.update(calibration(model, dataset.sequences, prefix_lengths))
        metrics["full_batch_examples"] = run.full_examples
    history = run.history
    if not history or history[-1]["step"] != step:
        history.append({"step": step, "loss": run.loss_value, "accuracy": accuracy})
    else:
        history[-1]["accuracy"] = accuracy
    clock.report(max(step, 1), run.loss_value, accuracy)
    data = dataset.describe()
    if split is not None:
        data["validation"] = {"sequences": len(split.valid), "sha256": corpus_hash(split.valid)}
    return TrainResult(model, metrics, history, status, data)


class _Clock:
    """Progress for one job across its phases (the held-out run, then a refit)."""

    def __init__(self, started: float, on_progress: Callable[[Progress], None] | None, total: int):
        self.started = started
        self.on_progress = on_progress
        self.total = total
        self.last_report = time.perf_counter()
        self.train_seconds = 0.0

    def extend(self, done: int, more: int) -> None:
        self.total = done + more

    def report(self, step: int, loss: float, accuracy: float | None) -> None:
        if self.on_progress is None:
            return
        self.last_report = time.perf_counter()
        elapsed = self.last_report - self.started
        total = max(self.total, step)
        self.on_progress(Progress(step=step, total_steps=total, loss=loss, accuracy=accuracy,
                                  elapsed_seconds=elapsed, eta_seconds=elapsed / step * (total - step)))


class _Run:
    """One training loop: a fresh network trained for up to n steps; with a validation Checker it stops once
    the held-out loss has not improved for `patience` evaluations, and ends with the best weights."""

    def __init__(self, model_config: ModelConfig, config: TrainConfig, dataset: Dataset, dev: torch.device,
                 prefix_lengths: tuple[int, ...], clock: _Clock, should_stop: Callable[[], bool] | None,
                 progress_every: int | None, *, checker: validation.Checker | None = None,
                 eval_dataset: Dataset | None = None, offset: int = 0, history: list[dict] | None = None,
                 teacher: ngram.CountModel | None = None, samples: int = 0, full_batches: bool = True):
        self.model_config, self.config, self.dataset, self.dev = model_config, config, dataset, dev
        self.prefix_lengths, self.clock, self.should_stop = prefix_lengths, clock, should_stop
        self.progress_every, self.checker, self.offset = progress_every, checker, offset
        self.eval_set = (eval_dataset or dataset).eval_set(config, prefix_lengths)
        self.model = build_model(model_config, config.seed, dev)
        self.model.set_dropout(config.dropout)
        self.history: list[dict] = [] if history is None else history
        self.status = "completed"
        self.step = 0
        self.best_step = 0
        self.best_loss = math.inf
        self.loss_value = float("nan")
        self.accuracy: float | None = None
        self.full_examples = 0
        self.teacher = teacher
        self.samples = samples if teacher is not None else 0
        self.full_batches = full_batches
        if dataset.table is not None:
            self.first_digits = dataset.table[:, 0]

    def loop(self, total: int) -> None:
        config, model, dev, L = self.config, self.model, self.dev, self.model_config.seq_length
        model.train()
        optimizer = Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        data_gen = torch.Generator().manual_seed(config.seed)
        forcing_rng = random.Random(config.seed)
        ratio = config.teacher_forcing_ratio
        full = self.dataset.full_batch(self.prefix_lengths, config.full_batch if self.full_batches else 0)
        if full is not None:
            full_src, full_trg, weights = full[0].src.to(dev), full[0].trg.to(dev), full[1].to(dev)
            self.full_examples = full[1].numel()
        full_targets = None if full is None or self.teacher is None else self._targets(full[0]).to(dev)
        screen = self.eval_set.head(SCREEN_SIZE)
        target = config.target_accuracy
        every = self.progress_every or max(1, total // 200)
        schedule = config if total == config.steps else replace(config, steps=total)
        best_loss, best_state, waited, lr_scale, cuts = math.inf, None, 0, 1.0, 0
        step = 0
        loss = torch.zeros(())
        for step in range(1, total + 1):
            if self.should_stop is not None and self.should_stop():
                self.status = "cancelled"
                step -= 1
                break
            t0 = time.perf_counter()
            forcing = [forcing_rng.random() < ratio for _ in range(L - 2)]
            if full is None:
                batch = make_batch(self.dataset.sample(config.batch_size, data_gen), self.prefix_lengths, data_gen)
                logits = model(batch.src.to(dev), batch.trg.to(dev), batch.lengths, forcing)
                if self.teacher is None:
                    loss = F.cross_entropy(logits.reshape(-1, self.model_config.vocab_size),
                                           batch.trg[:, 1:].reshape(-1).to(dev))
                else:
                    targets = self._targets(batch).to(dev)
                    loss = -(targets * torch.log_softmax(logits, 2)).sum(2).mean()
            else:
                logits = model(full_src, full_trg, full[0].lengths, forcing)
                if full_targets is None:
                    per_token = F.cross_entropy(logits.reshape(-1, self.model_config.vocab_size),
                                                full_trg[:, 1:].reshape(-1), reduction="none")
                else:
                    per_token = -(full_targets * torch.log_softmax(logits, 2)).sum(2)
                loss = (per_token.view(full_trg.size(0), L - 1).mean(1) * weights).sum()
            if self.teacher is not None and self.samples:
                # sequences the teacher writes: how it generalizes to histories the corpus never showed
                drawn = self.teacher.sample(self.first_digits, self.samples, data_gen)
                synthetic = make_batch(drawn, self.prefix_lengths, data_gen)
                logits = model(synthetic.src.to(dev), synthetic.trg.to(dev), synthetic.lengths, forcing)
                targets = self._targets(synthetic, beta=1.0).to(dev)
                loss = loss + (-(targets * torch.log_softmax(logits, 2)).sum(2).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step(schedule.learning_rate_at(step) * lr_scale)
            self.clock.train_seconds += time.perf_counter() - t0
            shown = self.offset + step
            if step % config.eval_every == 0 and step < total:
                self.loss_value = loss.item()
                # The cheap screen gives the curve its accuracy; only a screen that meets the target earns the
                # full evaluation that decides whether to stop.
                self.accuracy = evaluate(model, screen)
                if target is not None and self.accuracy >= target and screen is not self.eval_set:
                    self.accuracy = evaluate(model, self.eval_set)
                point: dict = {}
                if self.checker is not None:
                    held = self.checker.loss(model)
                    point["valid_loss"] = held
                    if held < best_loss:
                        best_loss, best_state, waited, self.best_step = held, _copy(model), 0, step
                        self.best_loss = held
                    else:
                        waited += 1
                record_point(self.history, shown, self.loss_value, self.accuracy, **point)
                self.clock.report(shown, self.loss_value, self.accuracy)
                if target is not None and self.accuracy >= target:
                    self.status = "target_reached"
                    break
                if waited >= config.patience:
                    if cuts == LR_CUTS:
                        break
                    # a plateau: go back to the best weights and take smaller steps from there
                    cuts, lr_scale, waited = cuts + 1, lr_scale * LR_CUT, 0
                    if best_state is not None:
                        model.load_state_dict(best_state)
            elif step % every == 0 or step == total:
                self.loss_value = loss.item()
                record_point(self.history, shown, self.loss_value, self.accuracy)
                self.clock.report(shown, self.loss_value, self.accuracy)
            elif time.perf_counter() - self.clock.last_report > REPORT_EVERY_S:
                self.clock.report(shown, loss.item(), self.accuracy)  # long jobs show life between points
        self.step = step
        if step > 0:
            self.loss_value = loss.item()
        if self.checker is not None and self.status == "completed":
            held = self.checker.loss(model)
            if held < best_loss or best_state is None:
                self.best_step, self.best_loss = step, held
            else:
                model.load_state_dict(best_state)
        if self.best_step == 0:
            self.best_step = step
        model.eval()


    def _targets(self, batch: Batch, beta: float | None = None) -> torch.Tensor:
        """What each decoder step is trained towards: the true digit, mixed for the digits the model generates
        with the count teacher's next-digit distribution (a smoothing that is as strong as the data calls for)."""
        assert self.teacher is not None
        trg = batch.trg
        L, V = trg.size(1), self.model_config.vocab_size
        onehot = F.one_hot(trg[:, 1:], V).float()
        # the digits the encoder has not read: a copy (prefix length L) has none to smooth
        read = batch.lengths if batch.lengths is not None else torch.full((trg.size(0),), batch.src.size(1))
        generated = (torch.arange(1, L).unsqueeze(0) >= read.unsqueeze(1)).unsqueeze(2)
        beta = self.config.teacher_weight if beta is None else beta
        mixed = (1 - beta) * onehot + beta * self.teacher.next_digits(trg)
        return torch.where(generated, mixed, onehot)


def _copy(model: Seq2Seq) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
