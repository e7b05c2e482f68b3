"""Bodies of POST /feedback and /feedback/batch."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model.limits import MAX_SEQ_LENGTH

from .schemas import Token

MAX_IMPRESSION = 1024  # characters: the longest token (64-character model id and session, 64-token prefix, k=50) is 920
MAX_EVENTS = 1000


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"impression": "AQBm...", "accepted": [7, 2, 8, 4, 3], "typed": [7, 2, 8, 4, 3]},
        {"impression": "AQBm...", "accepted": None, "typed": [7, 1, 1, 1, 1]}]})

    impression: str = Field(min_length=1, max_length=MAX_IMPRESSION,
                            description="the `impression` of a /topk answer (or /topk/batch item)")
    accepted: list[Token] | None = Field(None, min_length=1, max_length=MAX_SEQ_LENGTH,
                                         description="the suggestion the user took, or null when they took none; "
                                                     "it must be one of the impression's suggestions")
    typed: list[Token] | None = Field(None, min_length=1, max_length=MAX_SEQ_LENGTH,
                                      description="what the user finally entered, when known")


class FeedbackAnswer(BaseModel):
    impression_id: str = Field(description="the impression's id: one event is kept per impression")
    duplicate: bool = Field(description="true (with 200) when the impression already had feedback: nothing was added")


class FeedbackBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"events": [
        {"impression": "AQBm...", "accepted": [7, 2, 8, 4, 3]}, {"impression": "AQBn...", "accepted": None}]}]})

    events: list[Any] = Field(min_length=1, max_length=MAX_EVENTS, description=f"1 to {MAX_EVENTS} events, each "
                              "shaped as POST /feedback's body; each is answered on its own")


class FeedbackItem(BaseModel):
    status: int = Field(description="202 recorded, 200 a duplicate (nothing added), 422 refused (field and message "
                                    "say why)")
    impression_id: str | None = None
    duplicate: bool | None = None
    field: str | None = None
    message: str | None = None


class FeedbackBatchAnswer(BaseModel):
    results: list[FeedbackItem] = Field(description="one per event, in request order")
    recorded: int
    duplicates: int
    rejected: int
