"""A training job as one validated value, and the JSON body it is read from and written back to.

{"dataset": {"sequences": [[7,2,8,4,3], ...]} | {"generator": "random"},
 "model": {"attention": true, "embedding_dim": 16, "hidden_dim": 32, "vocab_size": 10, "seq_length": 5},
 "training": {"recipe": "default", "steps": 1000, "batch_size": 64, "learning_rate": 0.03, "teacher_forcing_ratio": 1.0,
              "seed": 0, "target_accuracy": null},
 "activate": "if_better", "name": "my digits", "max_attempts": 2}

Every field but the dataset is optional: training fields left out take the recipe's values (model.config.RECIPES),
the others their dataclass defaults. The rules live here and in the configs, once: POST /jobs reads the body through
a pydantic shape whose bounds are the Intervals below and then builds the JobSpec (build_spec); a stored body, a
training process's spec file and `python -m model train --job` read it with parse_job. Errors name the field the
way it was sent (`dataset.sequences[3][4]`) and stop at the first, so a bad 10 MiB body costs one short answer.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from .bounds import FieldError, Interval
from .config import MODEL_BOUNDS, TRAIN_BOUNDS, ModelConfig, TrainConfig, sampled_defaults
from .data import DataError
from .limits import MAX_SEQ_LENGTH, MAX_VOCAB, MAX_WIDTH
from .training import Dataset

Frequencies = Literal["sampled", "exact"]  # what a corpus's counts are (model/training.py Dataset)
Activation = Literal["never", "always", "if_better"]  # whether the trained model becomes active (app/jobs/policy.py)
DEFAULT_ACTIVATE: Activation = "if_better"
DEFAULT_MAX_ATTEMPTS = 2  # runs at most this many times if its worker is lost
ATTEMPTS = Interval(1, 10)
MAX_SEQUENCES = 100_000
MAX_EVAL_ITEMS = 1_000_000  # (prefix, sequence) pairs a corpus job evaluates on
MAX_NAME_LENGTH = 100
DATASET_KINDS = 'dataset must be {"sequences": [[...], ...]} or {"generator": "random"}'
DATASET_FIELDS = frozenset({"sequences", "generator", "frequencies"})

# What one job may ask for: the configs' own bounds, capped by what this service trains.
MODEL_LIMITS = {
    "vocab_size": MODEL_BOUNDS["vocab_size"].up_to(MAX_VOCAB),
    "seq_length": MODEL_BOUNDS["seq_length"].up_to(MAX_SEQ_LENGTH),
    "embedding_dim": MODEL_BOUNDS["embedding_dim"].up_to(MAX_WIDTH),
    "hidden_dim": MODEL_BOUNDS["hidden_dim"].up_to(MAX_WIDTH),
}
TRAINING_LIMITS = {
    "steps": TRAIN_BOUNDS["steps"].up_to(1_000_000),
    "batch_size": TRAIN_BOUNDS["batch_size"].up_to(4096),
    "learning_rate": TRAIN_BOUNDS["learning_rate"].up_to(10),
    "teacher_forcing_ratio": TRAIN_BOUNDS["teacher_forcing_ratio"],
    "lr_decay": TRAIN_BOUNDS["lr_decay"],
    "full_batch": TRAIN_BOUNDS["full_batch"].up_to(1_000_000),
    "target_accuracy": TRAIN_BOUNDS["target_accuracy"],
    "eval_every": TRAIN_BOUNDS["eval_every"].up_to(1_000_000),
    "validation_fraction": TRAIN_BOUNDS["validation_fraction"],
    "patience": TRAIN_BOUNDS["patience"].up_to(10_000),
    "weight_decay": TRAIN_BOUNDS["weight_decay"],
    "dropout": TRAIN_BOUNDS["dropout"],
    "teacher_weight": TRAIN_BOUNDS["teacher_weight"],
    "teacher_samples": TRAIN_BOUNDS["teacher_samples"].up_to(4096),
    "sampled_steps": TRAIN_BOUNDS["sampled_steps"].up_to(1_000_000),
    "refit_below": TRAIN_BOUNDS["refit_below"].up_to(MAX_SEQUENCES),
    "seed": Interval(0, 2**31 - 1),
}
MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig))
TRAINING_FIELDS = frozenset({"recipe", "prefix_lengths", *TRAINING_LIMITS})  # eval_size is not a job's to set
EVAL_SIZE = TrainConfig().eval_size


class JobError(DataError):
    """A job the rules refuse; `field` names it the way it was sent (`dataset.sequences[3][4]`)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class JobSpec:
    """Valid by construction: the configs check their own bounds, __post_init__ the job's caps and the data's fit."""

    model: ModelConfig
    training: TrainConfig
    sequences: list[list[int]] | None  # None: the seed's random generator
    activate: Activation = DEFAULT_ACTIVATE
    name: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    frequencies: Frequencies = "sampled"

    def __post_init__(self) -> None:
        _within("model", MODEL_LIMITS, self.model)
        _within("training", TRAINING_LIMITS, self.training)
        if self.training.eval_size != EVAL_SIZE:
            raise JobError("training.eval_size", "is not a job setting")
        prefix_lengths = self.training.prefix_lengths
        if prefix_lengths and max(prefix_lengths) > self.model.seq_length:
            raise JobError("training.prefix_lengths", f"must be between 1 and seq_length {self.model.seq_length}")
        if self.activate not in get_args(Activation):
            raise JobError("activate", f"must be one of {list(get_args(Activation))}, got {_short(self.activate)}")
        if self.max_attempts not in ATTEMPTS:
            raise JobError("max_attempts", f"must be {ATTEMPTS.describe()}, got {self.max_attempts}")
        if self.name is not None and len(self.name) > MAX_NAME_LENGTH:
            raise JobError("name", f"has {len(self.name)} characters; at most {MAX_NAME_LENGTH}")
        if self.frequencies not in get_args(Frequencies):
            raise JobError("dataset.frequencies", f"must be one of {list(get_args(Frequencies))}, got "
                                                  f"{_short(self.frequencies)}")
        if self.sequences is not None:
            _fit(self.sequences, self.model, prefix_lengths)
        elif self.frequencies != "sampled":
            raise JobError("dataset.frequencies", "applies to a corpus of sequences only")

    def dataset(self) -> Dataset:
        return Dataset(self.model, self.sequences, exact=self.frequencies == "exact")

    def to_dict(self) -> dict[str, Any]:
        """The body parse_job reads back into this spec. Training fields are written out resolved, so a job runs
        with the recipe it was submitted under; None means "not set" and is left out."""
        training = {k: v for k, v in self.training.to_dict().items() if k in TRAINING_FIELDS and v is not None}
        dataset: dict[str, Any] = {"generator": "random"} if self.sequences is None else {"sequences": self.sequences}
        if self.frequencies != "sampled":
            dataset["frequencies"] = self.frequencies
        body: dict[str, Any] = {
            "dataset": dataset,
            "model": self.model.to_dict(), "training": training, "activate": self.activate,
            "max_attempts": self.max_attempts}
        if self.name is not None:
            body["name"] = self.name
        return body


SETTINGS = frozenset(f.name for f in fields(JobSpec)) - {"model", "training", "sequences", "frequencies"}
BODY_FIELDS = frozenset({"dataset", "model", "training", *SETTINGS})


def build_spec(*, model: Mapping[str, Any], training: Mapping[str, Any], sequences: list[list[int]] | None,
               activate: Activation = DEFAULT_ACTIVATE, name: str | None = None,
               max_attempts: int = DEFAULT_MAX_ATTEMPTS, frequencies: Frequencies = "sampled") -> JobSpec:
    """A JobSpec from typed fields (a training field left out takes the recipe's value), every refusal a JobError.

    A sampled corpus trained with the default recipe and no width given gets the width its number of distinct
    sequences calls for, with its learning rate and batch size unless given (model/config.py sampled_defaults)."""
    if sequences is not None and frequencies == "sampled" and training.get("recipe", "default") == "default" \
            and not {"embedding_dim", "hidden_dim"} & {k for k, v in model.items() if v is not None}:
        try:
            distinct = len({tuple(s) for s in sequences})
        except TypeError:  # not a list of lists: the checks below name what is wrong
            distinct = 0
        shape, rate = sampled_defaults(distinct)
        model, training = {**model, **shape}, {**rate, **training}
    return JobSpec(_config(ModelConfig, "model", model), _config(TrainConfig, "training", training), sequences,
                   activate, name, max_attempts, frequencies)


def parse_job(body: object) -> JobSpec:
    """Read a JSON job body (already decoded) into a JobSpec: JSON types here, the rules in build_spec."""
    data = _object(body, "body", BODY_FIELDS)
    if "dataset" not in data:
        raise JobError("dataset", "Field required")
    dataset = data["dataset"]
    if not isinstance(dataset, dict) or ("sequences" in dataset) == ("generator" in dataset):
        raise JobError("dataset", DATASET_KINDS)
    _object(dataset, "dataset", DATASET_FIELDS)
    if "generator" in dataset and dataset["generator"] != "random":
        raise JobError("dataset.generator", f'must be "random", got {_short(dataset["generator"])}')
    sequences = check_sequences(dataset["sequences"]) if "sequences" in dataset else None
    settings = {key: _typed(key, value, _SPEC_TYPES[key]) for key, value in data.items()
                if key in SETTINGS and value is not None}
    frequencies = _typed("dataset.frequencies", dataset.get("frequencies", "sampled"), Frequencies)
    return build_spec(model=_section(data, "model", MODEL_FIELDS, _MODEL_TYPES),
                      training=_section(data, "training", TRAINING_FIELDS, _TRAINING_TYPES),
                      sequences=sequences, frequencies=frequencies, **settings)


def check_sequences(value: object) -> list[list[int]]:
    """Sequences of tokens any job could train on, else the first bad item named. Lengths are checked before
    items, so an absurd inner list is never walked."""
    if not isinstance(value, list):
        raise JobError("dataset.sequences", f"must be a list of sequences, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_SEQUENCES:
        raise JobError("dataset.sequences", f"has {len(value)} sequences; a job takes 1 to {MAX_SEQUENCES}")
    lengths = MODEL_LIMITS["seq_length"]
    for i, seq in enumerate(value):
        if not isinstance(seq, list):
            raise JobError(f"dataset.sequences[{i}]", f"must be a list of tokens, got {type(seq).__name__}")
        if len(seq) not in lengths:
            raise JobError(f"dataset.sequences[{i}]", f"has {len(seq)} tokens; a model allows {lengths.low} to "
                                                      f"{lengths.high}")
        for j, tok in enumerate(seq):
            if type(tok) is not int or not 0 <= tok < MAX_VOCAB:
                raise JobError(f"dataset.sequences[{i}][{j}]", f"must be a token from 0 to {MAX_VOCAB - 1}, "
                                                               f"got {str(tok)[:20]!r}")
    return value


# -- the rules -----------------------------------------------------------------------------------------------
def _within(section: str, limits: Mapping[str, Interval], config: ModelConfig | TrainConfig) -> None:
    for name, bounds in limits.items():
        value = getattr(config, name)
        if value is not None and value not in bounds:
            raise JobError(f"{section}.{name}", f"must be {bounds.describe()}, got {value!r}")


def _fit(sequences: list[list[int]], model: ModelConfig, prefix_lengths: tuple[int, ...] | None) -> None:
    """Every sequence as long as the model's and within its vocabulary; an evaluation set of bounded size."""
    L, V = model.seq_length, model.vocab_size
    if not sequences:
        raise JobError("dataset.sequences", "has no sequences")
    for i, seq in enumerate(sequences):
        if len(seq) != L:
            raise JobError(f"dataset.sequences[{i}]", f"has {len(seq)} tokens; the model's seq_length is {L}")
        for j, tok in enumerate(seq):
            if not 0 <= tok < V:
                raise JobError(f"dataset.sequences[{i}][{j}]", f"token {tok} is outside the vocabulary 0..{V - 1}")
    lengths = len(prefix_lengths or range(L))
    if len(sequences) * lengths > MAX_EVAL_ITEMS:
        raise JobError("dataset.sequences", f"{len(sequences)} sequences x {lengths} prefix lengths make more than "
                                            f"{MAX_EVAL_ITEMS} evaluation items; send fewer sequences or set "
                                            "training.prefix_lengths")


Config = TypeVar("Config", ModelConfig, TrainConfig)


def _config(cls: type[Config], section: str, given: Mapping[str, Any]) -> Config:
    try:
        return cls(**given)
    except FieldError as exc:
        raise JobError(f"{section}.{exc.field}", exc.reason) from None
    except (TypeError, ValueError) as exc:
        raise JobError(section, str(exc)) from None


# -- JSON types, read off the dataclasses' annotations ---------------------------------------------------------
_SPEC_TYPES = get_type_hints(JobSpec)
_MODEL_TYPES = get_type_hints(ModelConfig)
_TRAINING_TYPES = get_type_hints(TrainConfig)


def _object(value: object, where: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise JobError(where, f"must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise JobError(f"{where}.{unknown[0]}" if where != "body" else unknown[0], "Extra inputs are not permitted")
    return value


def _section(data: Mapping[str, Any], section: str, allowed: frozenset[str],
             types: Mapping[str, Any]) -> dict[str, Any]:
    """A config's given fields, typed; null counts as not given (the default, or the recipe's value)."""
    given = _object(data.get(section) or {}, section, allowed)
    return {key: _typed(f"{section}.{key}", value, types[key]) for key, value in given.items() if value is not None}


def _typed(field: str, value: object, hint: Any) -> Any:
    """value, if JSON gave it the type the annotation asks for (bool is not an int, an int is a float)."""
    if get_origin(hint) is Literal:
        if value not in get_args(hint):
            raise JobError(field, f"must be one of {list(get_args(hint))}, got {_short(value)}")
        return value
    kind = next((a for a in get_args(hint) if a is not type(None)), hint)  # X | None: X
    if get_origin(kind) is tuple:  # prefix_lengths: a list of integers
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_SEQ_LENGTH:
            raise JobError(field, f"must be a list of 1 to {MAX_SEQ_LENGTH} integers")
        return [_typed(f"{field}[{i}]", item, int) for i, item in enumerate(value)]
    ok = {bool: lambda v: type(v) is bool, int: lambda v: type(v) is int, str: lambda v: isinstance(v, str),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}[kind](value)
    if not ok:
        raise JobError(field, f"must be {'an' if kind is int else 'a'} {_NAMES[kind]}, got {_short(value)}")
    return value


_NAMES = {bool: "boolean", int: "integer", str: "string", float: "number"}


def _short(value: object) -> str:
    return repr(value)[:40]
