"""POST /feedback and /feedback/batch: what users did with the suggestions an impression names. Open like
inference (an impression is proof enough: it is signed); bodies bounded by the middleware (64 KiB, 1 MiB for
the batch). An event is answered 202 only once it is committed; a repeat is 200 with `"duplicate": true`. A new
event is counted in the live metrics (per model, and per rollout arm when its impression was served under one)."""
from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError

from ...errors import InvalidInput
from ...feedback.service import Impressions
from ...storage import FeedbackEvent
from ..deps import Managed
from ..errors import clip, validation_answer
from ..feedback_schemas import (
    FeedbackAnswer,
    FeedbackBatchAnswer,
    FeedbackBatchRequest,
    FeedbackRequest,
)
from ..lean import LeanRoute
from ..params import check_params
from ..schemas import errors
from ..sessions import check_session

router = APIRouter(tags=["feedback"], route_class=LeanRoute)
manage = APIRouter(tags=["learning"])  # management: a plain route, the key checked by the middleware
ERR = errors(413, 415, 422, 503)
DUPLICATE: dict[int | str, dict[str, Any]] = {200: {"model": FeedbackAnswer, "description": "the impression already had feedback; nothing was added"}}


def _impressions(request: Request) -> Impressions:
    return request.app.state.impressions


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


@router.post("/feedback", status_code=202, response_model=FeedbackAnswer, responses={**DUPLICATE, **ERR},
             summary="What the user did with an impression's suggestions: accepted one (or none), typed what")
async def feedback(request: Request, body: FeedbackRequest) -> tuple[int, bytes]:
    impressions = _impressions(request)
    signer = await impressions.load_key_async()
    event = impressions.check(signer, body.impression, body.accepted, body.typed)
    [new] = await impressions.record([event])
    if new:
        request.app.state.rollouts.feedback([event])
    return (202 if new else 200), _dumps({"impression_id": event.impression_id, "duplicate": not new})


@router.post("/feedback/batch", response_model=FeedbackBatchAnswer, responses=ERR,
             summary="Up to 1,000 feedback events in one transaction, one status per event")
async def feedback_batch(request: Request, body: FeedbackBatchRequest) -> bytes:
    impressions = _impressions(request)
    signer = await impressions.load_key_async()
    results: list[dict[str, object]] = []
    valid: list[FeedbackEvent] = []
    where: list[int] = []
    for i, item in enumerate(body.events):
        try:
            given = FeedbackRequest.model_validate(item)
            valid.append(impressions.check(signer, given.impression, given.accepted, given.typed))
            where.append(i)
            results.append({})
        except ValidationError as exc:
            _, fields, _ = validation_answer(exc.errors(include_url=False, include_context=False, include_input=False))
            results.append({"status": 422, "field": fields[0]["field"], "message": fields[0]["message"]})
        except InvalidInput as exc:
            results.append({"status": 422, "field": exc.field, "message": clip(exc.reason)})
    recorded = await impressions.record(valid) if valid else []
    request.app.state.rollouts.feedback([event for event, new in zip(valid, recorded) if new])
    for i, checked, new in zip(where, valid, recorded):
        results[i] = {"status": 202 if new else 200, "impression_id": checked.impression_id, "duplicate": not new}
    new_count = sum(recorded)
    return _dumps({"results": results, "recorded": new_count, "duplicates": len(recorded) - new_count,
                   "rejected": len(results) - len(recorded)})


class SessionDeleted(BaseModel):
    session: str
    deleted: int = Field(description="feedback events of the session that were deleted (0: none were kept)")


@manage.delete("/feedback", response_model=SessionDeleted, responses=errors(401, 422, 503), dependencies=[Managed],
               summary="Delete every feedback event of one session (`?session=ID`): a user's right to be forgotten")
async def delete_session(request: Request) -> SessionDeleted:
    check_params(request.query_params, ("session",))
    given = request.query_params.get("session")
    if given is None:
        raise InvalidInput("session", "is required: DELETE /feedback?session=ID")
    session = check_session(given)
    impressions = _impressions(request)
    deleted = await impressions.db.run(impressions.store.delete_session, session)
    return SessionDeleted(session=session, deleted=deleted)
