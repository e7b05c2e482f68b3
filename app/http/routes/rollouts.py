"""Rollouts over HTTP: start (the key), list, read with live figures, promote or abort by hand (the key). Each call
runs on the rollouts' database lane, never on the event loop."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ...registry.aliases import check_alias_name
from ...registry.ids import check_model_id
from ...rollouts.service import Rollouts
from ..deps import Managed
from ..rollout_schemas import RolloutStart, RolloutView
from ..schemas import errors

router = APIRouter(prefix="/rollouts", tags=["rollouts"])
ERR = errors(401, 404, 409, 422, 503)


def _rollouts(request: Request) -> Rollouts:
    return request.app.state.rollouts


@router.post("", status_code=201, response_model=RolloutView, responses=ERR, dependencies=[Managed],
             summary="Start a rollout of a candidate on an alias (one running rollout per alias: 409)")
async def start(request: Request, body: RolloutStart) -> RolloutView:
    rollouts = _rollouts(request)
    alias, candidate = check_alias_name(body.alias), check_model_id(body.candidate)
    given = body.model_dump(exclude_unset=True, exclude={"alias", "candidate", "shadow"})
    view = await rollouts.db.run(rollouts.start, alias, candidate, body.shadow, given)
    return RolloutView(**view)


@router.get("", response_model=list[RolloutView], responses=ERR, summary="Rollouts, newest first (the last 100)")
async def list_rollouts(request: Request) -> list[RolloutView]:
    rollouts = _rollouts(request)
    return [RolloutView(**view) for view in await rollouts.db.run(rollouts.list)]


@router.get("/{rollout_id}", response_model=RolloutView, responses=ERR,
            summary="One rollout: status, step, each arm's live metrics with intervals, every decision")
async def get_rollout(request: Request, rollout_id: str) -> RolloutView:
    rollouts = _rollouts(request)
    return RolloutView(**await rollouts.db.run(rollouts.view, rollout_id))


@router.post("/{rollout_id}/promote", response_model=RolloutView, responses=ERR, dependencies=[Managed],
             summary="Promote the candidate now: the alias moves to it (actor `rollout ID`)")
async def promote(request: Request, rollout_id: str) -> RolloutView:
    rollouts = _rollouts(request)
    return RolloutView(**await rollouts.db.run(rollouts.promote, rollout_id))


@router.post("/{rollout_id}/abort", response_model=RolloutView, responses=ERR, dependencies=[Managed],
             summary="Abort: all traffic back to the control at once")
async def abort(request: Request, rollout_id: str) -> RolloutView:
    rollouts = _rollouts(request)
    return RolloutView(**await rollouts.db.run(rollouts.abort, rollout_id))
