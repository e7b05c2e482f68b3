"""Request and response bodies of the public API, with the examples OpenAPI shows."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from ..errors import InvalidInput

MAX_PREFIX = 64  # far above any sequence length a model may have; the model's own length is checked later


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"start": 7}, {"prefix": [7, 2]},
                                                                               {"prefix": [7, 2], "attention": True, "model": "default"}]})

    start: StrictInt | None = Field(None, description="a start digit; give this or prefix")
    prefix: list[StrictInt] | None = Field(None, min_length=1, max_length=MAX_PREFIX, description="known tokens; give this or start")
    model: str | None = Field(None, description="model id; the active model when left out")
    attention: StrictBool = Field(False, description="include attention weights (attention models only)")

    @model_validator(mode="after")
    def exactly_one_of_start_and_prefix(self):
        if (self.start is None) == (self.prefix is None):
            raise ValueError("give exactly one of start and prefix")
        return self

    @property
    def tokens(self) -> list[int]:
        return [self.start] if self.start is not None else list(self.prefix)

    @property
    def field(self) -> str:
        return "start" if self.start is not None else "prefix"


class Step(BaseModel):
    token: int
    probability: float


class PredictResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": "default", "prefix": [7], "sequence": [7, 2, 8, 4, 3], "score": -0.51, "probability": 0.60,
        "steps": [{"token": 2, "probability": 0.60}, {"token": 8, "probability": 1.0},
                  {"token": 4, "probability": 1.0}, {"token": 3, "probability": 1.0}]}]})

    model: str
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
        "model": "default", "prefix": [7], "k": 3, "suggestions": [
            {"sequence": [7, 2, 8, 4, 3], "score": -0.51, "probability": 0.60},
            {"sequence": [7, 6, 5, 2, 8], "score": -1.21, "probability": 0.30},
            {"sequence": [7, 9, 1, 2, 4], "score": -2.30, "probability": 0.10}]}]})

    model: str
    prefix: list[int]
    k: int
    suggestions: list[Suggestion]


class ErrorResponse(BaseModel):
    error: str
    message: str
    request_id: str | None = None
    fields: list[dict] | None = None


MAX_BATCH = 4096  # prefixes in one batch request


class PredictBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"prefixes": [[7], [7, 2], [3, 1, 4]]}]})

    prefixes: list[list[StrictInt]] = Field(min_length=1, max_length=MAX_BATCH,
                                            description=f"1 to {MAX_BATCH} prefixes; the answers come in this order")
    model: str | None = Field(None, description="model id; the active model when left out")
    attention: StrictBool = Field(False, description="include attention weights (attention models only)")

    @field_validator("prefixes", mode="before")
    @classmethod
    def lengths_first(cls, value):
        """An absurd inner list is refused by its length before its items are read, naming its index."""
        if isinstance(value, list):
            if len(value) > MAX_BATCH:
                raise InvalidInput("prefixes", f"has {len(value)} prefixes; at most {MAX_BATCH}")
            for i, item in enumerate(value):
                if isinstance(item, list) and not 1 <= len(item) <= MAX_PREFIX:
                    raise InvalidInput(f"prefixes[{i}]", f"has {len(item)} tokens; a prefix has 1 to {MAX_PREFIX}")
        return value


class TopKBatchRequest(PredictBatchRequest):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"prefixes": [[7], [7, 2]], "k": 5}]})

    attention: None = Field(None, exclude=True, description="not used by top-k")
    k: StrictInt = Field(3, ge=1, le=50, description="suggestions per prefix")


class BatchResponse(BaseModel):
    model: str
    results: list[dict] = Field(description="one answer per prefix, in request order, each shaped as the single "
                                            "endpoint answers")


ERRORS = {code: {"model": ErrorResponse} for code in (404, 413, 422, 503)}
