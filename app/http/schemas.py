"""Request and response bodies of the public API, with the examples OpenAPI shows.

Requests are checked for types and for the bounds no model exceeds (model.limits); whether a prefix suits
the model that answers it is the model's own rule, applied once by the engine.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from model.limits import MAX_SEQ_LENGTH, MAX_VOCAB

from ..errors import InvalidInput
from ..registry.catalogue import ModelInfo
from .sessions import check_session

Token = Annotated[int, Field(strict=True, ge=0, lt=MAX_VOCAB)]
MAX_K = 50  # suggestions per prefix
MAX_BATCH = 4096  # prefixes in one batch request
MODEL_FIELD = ("a model id or an alias; production (the active model) when left out. Without the management key "
               "only production, aliases made public, the active model and SEQ2SEQ_PUBLIC_MODELS")
ALIAS_FIELD = ("the alias the request came through: production when it named no model, null when it named a model "
               "id")
ROLLOUT_FIELD = "the running rollout the request was routed by, when its alias is under one"
ARM_FIELD = "the rollout's arm that answered: control or candidate (a shadow's candidate never answers)"
SESSION = ("a session id, 1 to 64 printable ASCII characters without spaces (or the X-Session-ID header); "
           "impressions carry it")


class _Session(BaseModel):
    session: str | None = Field(None, description=SESSION)

    @field_validator("session")
    @classmethod
    def _session(cls, value: str | None) -> str | None:
        return value if value is None else check_session(value)


class PredictRequest(_Session):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"start": 7}, {"prefix": [7, 2]},
                                                                               {"prefix": [7, 2], "attention": True, "model": "default"}]})

    start: Token | None = Field(None, description="a start digit; give this or prefix")
    prefix: list[Token] | None = Field(None, min_length=1, max_length=MAX_SEQ_LENGTH,
                                       description="known tokens; give this or start")
    model: str | None = Field(None, description=MODEL_FIELD)
    attention: StrictBool = Field(False, description="include attention weights (attention models only)")

    @model_validator(mode="after")
    def exactly_one_of_start_and_prefix(self):
        if (self.start is None) == (self.prefix is None):
            raise ValueError("give exactly one of start and prefix")
        return self

    @property
    def tokens(self) -> list[int]:
        return [self.start] if self.start is not None else list(self.prefix or ())

    @property
    def field(self) -> str:
        return "start" if self.start is not None else "prefix"


class Step(BaseModel):
    token: int
    probability: float


class PredictResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "alias": "production", "model": "default", "prefix": [7], "sequence": [7, 2, 8, 4, 3], "score": -0.51, "probability": 0.60,
        "steps": [{"token": 2, "probability": 0.60}, {"token": 8, "probability": 1.0},
                  {"token": 4, "probability": 1.0}, {"token": 3, "probability": 1.0}]}]})

    alias: str | None = Field(None, description=ALIAS_FIELD + " (not repeated in a batch's items)")
    rollout: str | None = Field(None, description=ROLLOUT_FIELD)
    arm: str | None = Field(None, description=ARM_FIELD)
    model: str = Field(description="the model id that answered")
    prefix: list[int]
    sequence: list[int]
    score: float = Field(description="log-probability of the generated part")
    probability: float
    steps: list[Step]
    attention: list[list[float]] | None = Field(None, description="one row per generated position, one column per prefix position")


class Suggestion(BaseModel):
    sequence: list[int]
    score: float
    probability: float


class TopKResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "alias": "production", "model": "default", "prefix": [7], "k": 3, "suggestions": [
            {"sequence": [7, 2, 8, 4, 3], "score": -0.51, "probability": 0.60},
            {"sequence": [7, 6, 5, 2, 8], "score": -1.21, "probability": 0.30},
            {"sequence": [7, 9, 1, 2, 4], "score": -2.30, "probability": 0.10}]}]})

    alias: str | None = Field(None, description=ALIAS_FIELD + " (not repeated in a batch's items)")
    rollout: str | None = Field(None, description=ROLLOUT_FIELD)
    arm: str | None = Field(None, description=ARM_FIELD)
    model: str = Field(description="the model id that answered")
    prefix: list[int]
    k: int
    suggestions: list[Suggestion]
    impression: str | None = Field(None, description="an opaque, signed token naming this answer (model, prefix, "
                                   "k, suggestions, session, time) for POST /feedback; absent when impressions are "
                                   "off (SEQ2SEQ_IMPRESSIONS=false)")


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: str
    message: str
    request_id: str | None = None
    fields: list[FieldError] | None = None
    more_fields: int | None = Field(None, description="field errors left out of `fields`")
    current_generation: int | None = Field(None, description="a 409 for a stale expected_generation: the alias's "
                                                             "current one")


def lengths_first(value: Any, field: str, noun: str) -> Any:
    """An absurd inner list is refused by its length before its items are read, naming its index."""
    if isinstance(value, list):
        if len(value) > MAX_BATCH:
            raise InvalidInput(field, f"has {len(value)} {noun}s; at most {MAX_BATCH}")
        for i, item in enumerate(value):
            if isinstance(item, list) and not 1 <= len(item) <= MAX_SEQ_LENGTH:
                raise InvalidInput(f"{field}[{i}]", f"has {len(item)} tokens; a {noun} has 1 to {MAX_SEQ_LENGTH}")
    return value


class _ManyPrefixes(_Session):
    model_config = ConfigDict(extra="forbid")

    prefixes: list[list[Token]] = Field(min_length=1, max_length=MAX_BATCH,
                                        description=f"1 to {MAX_BATCH} prefixes; the answers come in this order")
    model: str | None = Field(None, description=MODEL_FIELD)

    @field_validator("prefixes", mode="before")
    @classmethod
    def lengths_first(cls, value: Any) -> Any:
        return lengths_first(value, "prefixes", "prefix")


class PredictBatchRequest(_ManyPrefixes):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prefixes": [[7], [7, 2], [3, 1, 4]]}]})

    attention: StrictBool = Field(False, description="include attention weights (attention models only)")


class TopKBatchRequest(_ManyPrefixes):
    model_config = ConfigDict(json_schema_extra={"examples": [{"prefixes": [[7], [7, 2]], "k": 5}]})

    k: int = Field(3, strict=True, ge=1, le=MAX_K, description="suggestions per prefix")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"sequences": [[7, 2, 8, 4, 3], [7, 1, 1, 1, 1]], "prefix_length": 1}]})

    sequences: list[list[Token]] = Field(min_length=1, max_length=MAX_BATCH,
                                         description=f"1 to {MAX_BATCH} complete sequences; results in this order")
    prefix_length: int = Field(1, strict=True, ge=1, le=MAX_SEQ_LENGTH,
                               description="how many leading digits are given: each result is log P(the rest | them)")
    model: str | None = Field(None, description=MODEL_FIELD)

    @field_validator("sequences", mode="before")
    @classmethod
    def lengths_first(cls, value: Any) -> Any:
        return lengths_first(value, "sequences", "sequence")


class Scored(BaseModel):
    log_probability: float = Field(description="natural log of P(the digits after the prefix | the prefix)")
    probability: float


class ScoreResponse(BaseModel):
    alias: str | None = Field(None, description=ALIAS_FIELD)
    model: str = Field(description="the model id that answered")
    results: list[Scored] = Field(description="one result per sequence, in request order")


class PredictBatchResponse(BaseModel):
    alias: str | None = Field(None, description=ALIAS_FIELD)
    rollout: str | None = Field(None, description=ROLLOUT_FIELD)
    arm: str | None = Field(None, description=ARM_FIELD)
    model: str = Field(description="the model id that answered")
    results: list[PredictResponse] = Field(description="one answer per prefix, in request order")


class TopKBatchResponse(BaseModel):
    alias: str | None = Field(None, description=ALIAS_FIELD)
    rollout: str | None = Field(None, description=ROLLOUT_FIELD)
    arm: str | None = Field(None, description=ARM_FIELD)
    model: str = Field(description="the model id that answered")
    results: list[TopKResponse] = Field(description="one answer per prefix, in request order")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI's description of a route's error answers: all shaped as ErrorResponse."""
    return {code: {"model": ErrorResponse} for code in codes}


ERRORS = errors(403, 404, 413, 415, 422, 503)


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(description="ready; degraded (200: a model is served, but not the one the active pointer "
                        "names, or the database could not be reached at start; the reason says why); or "
                        "unavailable (503: no model is served)")
    database: str = Field(description="ok, or unavailable with the reason; models already loaded are served anyway")
    model: str | None = Field(None, description="the model this process serves")
    active_model: str | None = Field(None, description="the model the active pointer names, as this process last "
                                     "read it; differs from model while degraded (absent before it could be read)")
    device: str | None = None
    device_note: str | None = Field(None, description="why the device differs from the one asked for")
    reason: str | None = Field(None, description="why no model is ready, or why the replica is degraded")


class Info(BaseModel):
    version: str
    auth_required: bool = Field(description="whether management needs the API key")
    active_model: ModelInfo | None = Field(description="the active model, as GET /models/{id} describes it")


class Corpus(BaseModel):
    description: str
    frequencies: Literal["sampled", "exact"] = Field("sampled", description="what its counts are (a job's "
                                                                            "dataset.frequencies)")
    sequences: list[list[int]]


PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                         "description": "Prometheus text exposition format 0.0.4"}}


# -- aliases ---------------------------------------------------------------------------------------------
class AliasPut(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model": "m-20260101-120000-a1b2c3", "expected_generation": 4, "reason": "better on last week's data"}]})

    model: str = Field(min_length=1, max_length=64, description="the model id the alias is to name")
    expected_generation: int | None = Field(None, strict=True, ge=0, description=(
        "move only if the alias is at this generation (0: it does not exist); 409 naming the current one otherwise"))
    reason: str | None = Field(None, max_length=500, description="why, kept in the alias's history")
    public: StrictBool | None = Field(None, description=(
        "whether anyone may name the alias on the inference routes without the key; left out: unchanged (false "
        "for a new alias). production is always public"))


class AliasView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "production", "model": "default", "generation": 3, "public": True,
        "updated_at": "2026-01-31T12:00:00.000+00:00", "rollout": None}]})

    name: str
    model: str = Field(description="the model id it names")
    generation: int = Field(description="grows by one with every move (production: the active pointer's version)")
    public: bool = Field(description="whether it may be named without the management key")
    updated_at: str | None = Field(description="when it last moved, ISO 8601 (null: production before any activation)")
    rollout: dict[str, Any] | None = Field(None, description="the running rollout that uses it, if any: "
                                           "{id, step, percent, candidate, shadow}")

    @classmethod
    def of(cls, row, running=None) -> AliasView:
        rollout = None
        if running is not None:
            rollout = {"id": running.id, "step": running.step, "percent": running.percent,
                       "candidate": running.candidate, "shadow": running.shadow}
        return cls(name=row.name, model=row.model, generation=row.generation, public=row.public,
                   updated_at=row.updated_at, rollout=rollout)


class AliasMoveView(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "at": "2026-01-31T12:00:00.000+00:00", "model": "m-20260101-120000-a1b2c3", "previous": "default",
        "generation": 3, "reason": "activated: scored 0.91 against 0.88", "actor": "job job-20260101-120000-a1b2c3"}]})

    at: str | None = Field(description="when, ISO 8601 (null: production's generation 0, before any activation)")
    model: str | None = Field(description="the model it named from then on (null: the alias was deleted)")
    previous: str | None = Field(description="the model it named before")
    generation: int
    reason: str | None
    actor: str = Field(description="'api', 'job JOB_ID', 'rollout ROLLOUT_ID', 'migration' or 'service'")

    @classmethod
    def of(cls, move) -> AliasMoveView:
        return cls(at=move.at, model=move.model, previous=move.previous, generation=move.generation,
                   reason=move.reason, actor=move.actor)
