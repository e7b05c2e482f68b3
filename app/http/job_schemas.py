"""The jobs API's shapes: the POST /jobs body and the job as every 2xx answer shows it.

The body is a thin typed shape over model/jobspec.py: the JSON types, and bounds that are jobspec's own Intervals
(so OpenAPI shows them and a 422 names each field), then to_spec builds the one validated JobSpec by the model's
rules. Fields left out take the model's defaults (the recipe's for training).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    field_validator,
)

from model.config import SAMPLED_WIDTHS, ModelConfig, Recipe, TrainConfig, sampled_defaults
from model.jobspec import (
    ATTEMPTS,
    DATASET_KINDS,
    DEFAULT_ACTIVATE,
    DEFAULT_MAX_ATTEMPTS,
    MAX_NAME_LENGTH,
    MAX_SEQUENCES,
    MODEL_LIMITS,
    TRAINING_LIMITS,
    Activation,
    Frequencies,
    JobError,
    JobSpec,
    build_spec,
    check_sequences,
)
from model.limits import MAX_SEQ_LENGTH

from .. import storage
from ..errors import InvalidInput
from ..storage.schema import JOB_STATUSES


def _named(error: JobError) -> InvalidInput:
    """The model's refusal as the service's, with its field named the way it was sent."""
    return InvalidInput(error.field, error.reason)


class RandomData(BaseModel):
    model_config = ConfigDict(extra="forbid")
    generator: Literal["random"] = Field(description="the seed's generator: fresh random digits every step (copy task)")


class Corpus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sequences: list[list[StrictInt]] = Field(min_length=1, max_length=MAX_SEQUENCES,
                                             description="training sequences; repeats count, frequency is the signal")
    frequencies: Frequencies = Field("sampled", description=(
        "sampled (default): the counts are a sample of usage, so a share is held out, training stops on it and "
        "the model smooths towards a count baseline; exact: the counts are a table of frequencies to reproduce "
        "exactly, trained on in full"))

    @field_validator("sequences", mode="before")
    @classmethod
    def first_problem_only(cls, value: Any) -> Any:
        """One short answer for 100,000 bad tokens, not 100,000 error entries (pydantic's message names a type)."""
        if not isinstance(value, list):
            return value
        try:
            return check_sequences(value)
        except JobError as exc:
            raise _named(exc) from None


def _dataset_kind(data: Any) -> str | None:
    if isinstance(data, dict):
        return "corpus" if "sequences" in data else "random" if "generator" in data else None
    return "corpus" if isinstance(data, Corpus) else "random" if isinstance(data, RandomData) else None


# Told apart by their key, so an error speaks of the dataset that was sent rather than of both kinds.
Dataset = Annotated[Annotated[Corpus, Tag("corpus")] | Annotated[RandomData, Tag("random")],
                    Discriminator(_dataset_kind, custom_error_type="dataset_kind", custom_error_message=DATASET_KINDS)]
MODEL = ModelConfig()  # the defaults a field left out takes
# What model.config.sampled_defaults gives a sampled corpus under the default recipe, as the descriptions say it.
_LEAST = SAMPLED_WIDTHS[0][0]
_WIDE = {name: value for fields in sampled_defaults(_LEAST) for name, value in fields.items()}


def _sampled(field: str, otherwise: object) -> str:
    return (f"left out: {otherwise}, or {_WIDE[field]} for a sampled corpus of {_LEAST} or more distinct "
            "sequences under the default recipe")


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attention: StrictBool = MODEL.attention
    embedding_dim: StrictInt | None = Field(None, **MODEL_LIMITS["embedding_dim"].as_field(),
                                            description=_sampled("embedding_dim", MODEL.embedding_dim))
    hidden_dim: StrictInt | None = Field(None, **MODEL_LIMITS["hidden_dim"].as_field(),
                                         description=_sampled("hidden_dim", MODEL.hidden_dim))
    vocab_size: StrictInt = Field(MODEL.vocab_size, **MODEL_LIMITS["vocab_size"].as_field())
    seq_length: StrictInt = Field(MODEL.seq_length, **MODEL_LIMITS["seq_length"].as_field())


class TrainingSpec(BaseModel):
    """A field left out (or null) takes the recipe's value (model.config.RECIPES)."""

    model_config = ConfigDict(extra="forbid")
    recipe: Recipe = Field(TrainConfig.recipe, description="'default': chosen by measurement for calibrated "
                                                           "probabilities and fast training; 'seed': the seed's recipe")
    steps: StrictInt | None = Field(None, **TRAINING_LIMITS["steps"].as_field())
    batch_size: StrictInt | None = Field(None, **TRAINING_LIMITS["batch_size"].as_field(),
                                         description=_sampled("batch_size", "the recipe's"))
    learning_rate: float | None = Field(None, **TRAINING_LIMITS["learning_rate"].as_field(),
                                        description=_sampled("learning_rate", "the recipe's"))
    teacher_forcing_ratio: float | None = Field(None, **TRAINING_LIMITS["teacher_forcing_ratio"].as_field(),
                                                description="1.0 learns a corpus's frequencies best")
    lr_decay: float | None = Field(None, **TRAINING_LIMITS["lr_decay"].as_field(),
                                   description="fraction of the steps, at the end, over which the learning rate falls "
                                               "to zero")
    full_batch: StrictInt | None = Field(None, **TRAINING_LIMITS["full_batch"].as_field(),
                                         description="a corpus with at most this many distinct examples trains on all "
                                                     "of them each step")
    seed: StrictInt = Field(TrainConfig.seed, **TRAINING_LIMITS["seed"].as_field())
    target_accuracy: float | None = Field(None, **TRAINING_LIMITS["target_accuracy"].as_field(),
                                          description="stop once the held-out metric reaches this")
    eval_every: StrictInt | None = Field(None, **TRAINING_LIMITS["eval_every"].as_field())
    validation_fraction: float | None = Field(None, **TRAINING_LIMITS["validation_fraction"].as_field(),
                                              description="share of a sampled corpus held out to stop on")
    patience: StrictInt | None = Field(None, **TRAINING_LIMITS["patience"].as_field(),
                                       description="evaluations without a better held-out loss before stopping")
    weight_decay: float | None = Field(None, **TRAINING_LIMITS["weight_decay"].as_field())
    dropout: float | None = Field(None, **TRAINING_LIMITS["dropout"].as_field())
    teacher_weight: float | None = Field(None, **TRAINING_LIMITS["teacher_weight"].as_field(),
                                         description="share of each generated digit's target taken from the count "
                                                     "baseline chosen on the held-out part")
    teacher_samples: StrictInt | None = Field(None, **TRAINING_LIMITS["teacher_samples"].as_field(),
                                              description="sequences the teacher writes for each step (small "
                                                          "sampled corpora)")
    sampled_steps: StrictInt | None = Field(None, **TRAINING_LIMITS["sampled_steps"].as_field(),
                                            description="the most steps a sampled corpus trains each way; steps "
                                                        "when steps is given")
    refit_below: StrictInt | None = Field(None, **TRAINING_LIMITS["refit_below"].as_field(),
                                          description="a sampled corpus of at most this many sequences is trained "
                                                      "again on all of them for the chosen number of steps")
    prefix_lengths: list[StrictInt] | None = Field(None, min_length=1, max_length=MAX_SEQ_LENGTH)


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
    activate: Activation = Field(DEFAULT_ACTIVATE, description="if_better: only when the new model scores at least as "
                                                               "well as the active one on this job's held-out "
                                                               "evaluation set")
    name: str | None = Field(None, max_length=MAX_NAME_LENGTH)
    max_attempts: StrictInt = Field(DEFAULT_MAX_ATTEMPTS, **ATTEMPTS.as_field(),
                                    description="runs at most this many times if its worker is lost")

    def to_spec(self) -> JobSpec:
        """The one validated value the service stores and the training process runs. InvalidInput naming the
        field when the model's rules refuse it (a token outside the vocabulary, prefix lengths past seq_length)."""
        sequences = self.dataset.sequences if isinstance(self.dataset, Corpus) else None
        try:
            return build_spec(model=self.model.model_dump(exclude_none=True),
                              training=self.training.model_dump(exclude_none=True),
                              sequences=sequences, activate=self.activate, name=self.name,
                              max_attempts=self.max_attempts,
                              frequencies=self.dataset.frequencies if isinstance(self.dataset, Corpus) else "sampled")
        except JobError as exc:
            raise _named(exc) from None


# -- answers -------------------------------------------------------------------------------------------------
class JobProgressView(BaseModel):
    step: int = 0
    total_steps: int | None = None
    fraction: float | None = Field(None, description="0 to 1")
    loss: float | None = None
    accuracy: float | None = Field(None, description="the latest held-out evaluation; null before the first")
    eta_seconds: float | None = None


class HistoryPoint(BaseModel):
    step: int
    loss: float | None = None
    accuracy: float | None = None


class WorkerView(BaseModel):
    host: str | None
    pid: int | None


class JobView(BaseModel):
    """A job as GET /jobs/{id}, its list, its event stream, POST /jobs and cancel answer it."""

    id: str
    status: str = Field(json_schema_extra={"enum": list(JOB_STATUSES)})
    progress: JobProgressView
    history: list[HistoryPoint] = Field(description="the training curve, at most a few hundred points")
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    model_id: str | None = Field(description="the id its model is registered under once it succeeds")
    activated: bool
    activation_reason: str | None
    attempt: int
    max_attempts: int
    handbacks: int = Field(description="times a stopping worker handed it back to the queue (capped by "
                                       "SEQ2SEQ_JOB_MAX_HANDBACKS)")
    config: dict[str, Any] = Field(description="the job as submitted, its dataset as a count and a hash")
    name: str | None
    worker: WorkerView | None = Field(description="the process holding its lease, while it runs")
    trigger: str = Field("api", description="who queued it: api (POST /jobs) or learning (a learning cycle, named by "
                         "config.cycle)")

    @classmethod
    def of(cls, job: storage.JobRow) -> JobView:
        worker = WorkerView(host=job.worker_host, pid=job.worker_pid) if job.status == "running" else None
        return cls.model_validate({
            "id": job.id, "status": job.status, "progress": job.progress, "history": job.history,
            "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
            "error": job.error, "model_id": job.model_id, "activated": job.activated,
            "activation_reason": job.activation_reason, "attempt": job.attempt, "max_attempts": job.max_attempts,
            "handbacks": job.handbacks, "config": job.config, "name": job.config.get("name"), "worker": worker,
            "trigger": job.config.get("trigger", "api")})
