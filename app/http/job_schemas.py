"""The POST /jobs body: types and bounds. Fields left out take the model's defaults (the recipe's for training)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)

from ..errors import InvalidInput

MAX_SEQUENCES = 100_000
MAX_LENGTH = 64  # the longest seq_length a job may ask for
MAX_VOCAB = 1000
MAX_EVAL_ITEMS = 1_000_000  # (prefix, sequence) pairs a corpus job evaluates on


class RandomData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    generator: Literal["random"] = Field(description="the seed's generator: fresh random digits every step (copy task)")


class Corpus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sequences: list[list[StrictInt]] = Field(min_length=1, max_length=MAX_SEQUENCES,
                                             description="training sequences; repeats count, frequency is the signal")

    @field_validator("sequences", mode="before")
    @classmethod
    def first_problem_only(cls, value):
        """Stop at the first bad item, naming it: 100,000 bad tokens must cost one short answer, not 100,000
        error entries. Lengths are checked before items, so an absurd inner list is never walked."""
        if not isinstance(value, list):
            return value  # pydantic's own message names the type
        if len(value) > MAX_SEQUENCES:
            raise InvalidInput("dataset.sequences", f"has {len(value)} sequences; at most {MAX_SEQUENCES}")
        for i, seq in enumerate(value):
            if not isinstance(seq, list):
                raise InvalidInput(f"dataset.sequences[{i}]", f"must be a list of tokens, got {type(seq).__name__}")
            if not 1 <= len(seq) <= MAX_LENGTH:
                raise InvalidInput(f"dataset.sequences[{i}]", f"has {len(seq)} tokens; a model allows 2 to {MAX_LENGTH}")
            for j, tok in enumerate(seq):
                if type(tok) is not int or not 0 <= tok < MAX_VOCAB:
                    raise InvalidInput(f"dataset.sequences[{i}][{j}]",
                                     f"must be a token from 0 to {MAX_VOCAB - 1}, got {str(tok)[:20]!r}")
        return value


def _dataset_kind(data) -> str | None:
    if isinstance(data, dict):
        return "corpus" if "sequences" in data else "random" if "generator" in data else None
    return "corpus" if isinstance(data, Corpus) else "random" if isinstance(data, RandomData) else None


# Told apart by their key, so an error speaks of the dataset that was sent rather than of both kinds.
Dataset = Annotated[Annotated[Corpus, Tag("corpus")] | Annotated[RandomData, Tag("random")],
                    Discriminator(_dataset_kind, custom_error_type="dataset_kind",
                                  custom_error_message='dataset must be {"sequences": [[...], ...]} or {"generator": "random"}')]


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attention: StrictBool = True
    embedding_dim: StrictInt = Field(16, ge=1, le=512)
    hidden_dim: StrictInt = Field(32, ge=1, le=512)
    vocab_size: StrictInt = Field(10, ge=2, le=MAX_VOCAB)
    seq_length: StrictInt = Field(5, ge=2, le=MAX_LENGTH)


class TrainingSpec(BaseModel):
    """Types and bounds only; a field left out takes the recipe's value (model.config.RECIPES), so the
    product's defaults live in one place."""
    model_config = ConfigDict(extra="forbid")
    recipe: Literal["default", "seed"] = Field("default", description="'default': chosen by measurement for "
                                               "calibrated probabilities and fast training; 'seed': the seed's recipe")
    steps: StrictInt | None = Field(None, ge=1, le=1_000_000)
    batch_size: StrictInt | None = Field(None, ge=1, le=4096)
    learning_rate: float | None = Field(None, gt=0, le=10)
    teacher_forcing_ratio: float | None = Field(None, ge=0, le=1, description="1.0 learns a corpus's frequencies best")
    lr_decay: float | None = Field(None, ge=0, le=1, description="fraction of the steps, at the end, over which "
                                                                  "the learning rate falls to zero")
    full_batch: StrictInt | None = Field(None, ge=0, le=1_000_000, description="a corpus with at most this many "
                                         "distinct examples trains on all of them each step")
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1)
    target_accuracy: float | None = Field(None, gt=0, le=1, description="stop once the held-out metric reaches this")
    eval_every: StrictInt | None = Field(None, ge=1, le=1_000_000)
    prefix_lengths: list[StrictInt] | None = Field(None, min_length=1, max_length=64)


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dataset": {"sequences": [[7, 2, 8, 4, 3], [7, 2, 8, 4, 3], [7, 6, 5, 2, 8], [6, 9, 4, 7, 1]]},
         "model": {"attention": True}, "training": {"steps": 1500, "teacher_forcing_ratio": 1.0},
         "activate": "if_better", "name": "my digits"},
        {"dataset": {"generator": "random"}, "training": {"target_accuracy": 0.999, "steps": 20000},
         "activate": "never"}]})

    dataset: Dataset
    model: ModelSpec = ModelSpec()
    training: TrainingSpec = TrainingSpec()
    activate: Literal["never", "always", "if_better"] = Field(
        "if_better", description="if_better: only when the new model scores at least as well as the active one "
                                 "on this job's held-out evaluation set")
    name: str | None = Field(None, max_length=100)
    max_attempts: StrictInt = Field(2, ge=1, le=10, description="runs at most this many times if its worker is lost")

    @model_validator(mode="after")
    def sequences_fit_the_model(self):
        if isinstance(self.dataset, Corpus):
            L, V = self.model.seq_length, self.model.vocab_size
            for i, seq in enumerate(self.dataset.sequences):
                if len(seq) != L:
                    raise InvalidInput(f"dataset.sequences[{i}]", f"has {len(seq)} tokens; the model's seq_length is {L}")
                for j, tok in enumerate(seq):
                    if not 0 <= tok < V:
                        raise InvalidInput(f"dataset.sequences[{i}][{j}]", f"token {tok} is outside the vocabulary 0..{V - 1}")
            lengths = len(self.training.prefix_lengths or range(L))
            if len(self.dataset.sequences) * lengths > MAX_EVAL_ITEMS:
                raise InvalidInput("dataset.sequences", f"{len(self.dataset.sequences)} sequences x {lengths} prefix "
                                                      f"lengths make more than {MAX_EVAL_ITEMS} evaluation items; "
                                                      "send fewer sequences or set training.prefix_lengths")
        if self.training.prefix_lengths and max(self.training.prefix_lengths) > self.model.seq_length:
            raise ValueError(f"training.prefix_lengths must be between 1 and seq_length {self.model.seq_length}")
        if self.training.prefix_lengths and min(self.training.prefix_lengths) < 1:
            raise ValueError("training.prefix_lengths must be at least 1")
        return self
