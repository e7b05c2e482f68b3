"""Hyperparameters as data: a checkpoint stores these beside its weights, so a file describes itself."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

from .bounds import FieldError, Interval

# What each field of a config may be; job bodies narrow these with the service's caps (model/jobspec.py).
MODEL_BOUNDS = {"vocab_size": Interval(2), "seq_length": Interval(2),  # a start token and one to predict
                "embedding_dim": Interval(1), "hidden_dim": Interval(1)}
TRAIN_BOUNDS = {"steps": Interval(1), "batch_size": Interval(1), "learning_rate": Interval(0, low_open=True),
                "teacher_forcing_ratio": Interval(0, 1), "lr_decay": Interval(0, 1), "full_batch": Interval(0),
                "target_accuracy": Interval(0, 1, low_open=True), "eval_every": Interval(1), "eval_size": Interval(1),
                "validation_fraction": Interval(0, 0.5), "patience": Interval(1), "weight_decay": Interval(0, 1),
                "dropout": Interval(0, 0.9), "teacher_weight": Interval(0, 1), "teacher_samples": Interval(0), "sampled_steps": Interval(1),
                "refit_below": Interval(0)}


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape. Defaults are the seed's."""

    vocab_size: int = 10  # digits 0-9
    seq_length: int = 5
    embedding_dim: int = 16
    hidden_dim: int = 32
    attention: bool = True

    def __post_init__(self) -> None:
        for name, bounds in MODEL_BOUNDS.items():
            bounds.check(name, getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**_known(cls, data))


# Training recipes: the values a TrainConfig takes for the fields it is not given. "default" is the product's,
# chosen by measurement (bench/calibration.py, bench/train_speed.py); "seed" is the seed's exact recipe.
# A new recipe is a name in Recipe (so the API lists it) and its values here.
Recipe = Literal["default", "seed"]
RECIPES: dict[Recipe, dict[str, Any]] = {
    "default": {
        "steps": 1000,  # the copy task reaches 99.9% in 175-525 and stops there (with a target)
        "batch_size": 64,
        "learning_rate": 0.03,
        "teacher_forcing_ratio": 1.0,  # maximum likelihood: the probabilities top-k ranks by are the corpus's
        "lr_decay": 0.3,  # the learning rate falls linearly to zero over the last 30% of the steps
        "full_batch": 4096,  # a corpus with at most this many distinct examples trains on all of them each step
        "eval_every": 25,
        "validation_fraction": 0.1,  # of a corpus's sequences, held out to choose the step to stop at
        "patience": 8,  # evaluations without a better held-out loss before the rate falls, or training stops
        "weight_decay": 0.0,
        "dropout": 0.0,
        "teacher_weight": 0.8,
        "teacher_samples": 256,  # for a corpus of at most refit_below sequences
        "sampled_steps": 2000,  # the most steps a sampled corpus trains each way (it stops on its held-out part)
        "refit_below": 5000,  # a corpus of at most this many sequences is refitted on all of them
    },
    "seed": {
        "steps": 2000, "batch_size": 64, "learning_rate": 0.005, "teacher_forcing_ratio": 0.5, "lr_decay": 0.0,
        "full_batch": 0, "eval_every": 100, "validation_fraction": 0.0, "patience": 1, "weight_decay": 0.0,
        "dropout": 0.0, "teacher_weight": 0.0, "teacher_samples": 0, "sampled_steps": 2000, "refit_below": 0,
    },
}
if set(RECIPES) != set(get_args(Recipe)):
    raise RuntimeError(f"every Recipe needs its values in RECIPES: {sorted(set(get_args(Recipe)) ^ set(RECIPES))}")


# The default recipe's network for a corpus whose frequencies are sampled, by its number of distinct sequences:
# (at least this many distinct, embedding_dim, hidden_dim, learning_rate, batch_size), first match. Fewer than 800
# distinct sequences keep the seed's shape and rate (an order-1 chain's 400-700 are modelled within 0.5% of the count
# baseline by it); a richer sample needs the width (bench/generalization.py: 300 noisy templates sampled 30,000
# times, 5,900 distinct, came to 1.10x the count baseline's held-out NLL at width 32, 1.04x at 64, 1.02x at 128), the
# wider network a lower rate (1.00x at 128 with 0.01), and batches of 128 rather than 64 (30,000 sequences, seeds 0
# and 1: templates 1.007-1.008x -> 0.998-0.999x, the mixture 1.008-1.015x -> 1.003-1.010x, the order-2 chain 1.007x
# -> 1.003x, in about the same time: a batch this small does not fill the processor). A batch is drawn only when a
# corpus has more distinct examples than full_batch. Job bodies that give a width keep it (model/jobspec.py).
SAMPLED_WIDTHS: tuple[tuple[int, int, int, float, int], ...] = ((800, 32, 128, 0.01, 128),)


def sampled_defaults(distinct: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model fields, training fields) the default recipe takes for a sampled corpus of `distinct` different
    sequences; empty when the seed's shape stays."""
    for least, embedding_dim, hidden_dim, learning_rate, batch_size in SAMPLED_WIDTHS:
        if distinct >= least:
            return ({"embedding_dim": embedding_dim, "hidden_dim": hidden_dim},
                    {"learning_rate": learning_rate, "batch_size": batch_size})
    return {}, {}


@dataclass(frozen=True)
class TrainConfig:
    """How to train: a recipe's values, and any field given explicitly over them (the optimizer is Adam).

    TrainConfig() is the product's default recipe; TrainConfig(recipe="seed") the seed's (its "epochs" are our
    steps); TrainConfig(recipe="seed", steps=500) the seed's with 500 steps."""

    recipe: Recipe = "default"
    steps: int = None  # type: ignore[assignment]  # None: the recipe's (likewise below)
    batch_size: int = None  # type: ignore[assignment]
    learning_rate: float = None  # type: ignore[assignment]
    teacher_forcing_ratio: float = None  # type: ignore[assignment]
    lr_decay: float = None  # type: ignore[assignment]  # fraction of the steps, at the end, over which lr falls to 0
    full_batch: int = None  # type: ignore[assignment]  # a corpus with at most this many distinct examples: full batches
    eval_every: int = None  # type: ignore[assignment]  # steps between evaluations (a 1,000-item screen first)
    # A corpus's held-out share: training stops once its loss has not improved for `patience` evaluations and keeps
    # the best weights; a corpus of at most refit_below sequences is then trained again on everything, for as
    # many steps (model/training.py).
    validation_fraction: float = None  # type: ignore[assignment]
    patience: int = None  # type: ignore[assignment]
    weight_decay: float = None  # type: ignore[assignment]  # decoupled, as AdamW's
    refit_below: int = None  # type: ignore[assignment]
    dropout: float = None  # type: ignore[assignment]  # on embeddings and the output layer's input, while training
    # Share of each generated digit's target that is a count baseline's next-digit distribution (model/ngram.py).
    teacher_weight: float = None  # type: ignore[assignment]
    teacher_samples: int = None  # type: ignore[assignment]  # sequences the teacher writes for each step
    sampled_steps: int = None  # type: ignore[assignment]  # `steps` when steps is given
    seed: int = 0
    target_accuracy: float | None = None  # stop early once the evaluation metric reaches this
    # Prefix lengths the encoder sees; None means 1..L for a corpus and L alone (the copy task) for random data.
    prefix_lengths: tuple[int, ...] | None = None
    eval_size: int = 10_000  # held-out sequences for the random generator's final exact-match

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise FieldError("recipe", f"must be one of {sorted(RECIPES)}, got {self.recipe!r}")
        if self.steps is not None and self.sampled_steps is None:  # steps given: the cap for every kind of data
            object.__setattr__(self, "sampled_steps", self.steps)
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name, bounds in TRAIN_BOUNDS.items():
            if getattr(self, name) is not None:  # target_accuracy may be None: no target
                bounds.check(name, getattr(self, name))
        if self.prefix_lengths is not None:
            object.__setattr__(self, "prefix_lengths", tuple(sorted(set(int(p) for p in self.prefix_lengths))))
            if not self.prefix_lengths or min(self.prefix_lengths) < 1:
                raise FieldError("prefix_lengths", "must be a non-empty list of lengths >= 1")

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of step 1..steps: constant, then falling linearly over the last lr_decay of the run."""
        decay_steps = round(self.steps * self.lr_decay)
        remaining = self.steps - step + 1  # the last step still moves
        if decay_steps < 1 or remaining > decay_steps:
            return self.learning_rate
        return self.learning_rate * remaining / (decay_steps + 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["prefix_lengths"] is not None:
            data["prefix_lengths"] = list(data["prefix_lengths"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Given fields over the recipe's (data["recipe"], default "default"); null means the recipe's value."""
        return cls(**_known(cls, data))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return dict(data)

