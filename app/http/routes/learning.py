"""The learning loop over HTTP: the policy (read open, set with the key), a cycle by hand (the key), the cycles.
Each call runs on the learning lane, never on the event loop."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ...errors import InvalidInput
from ...learning import Learning
from ...learning.service import WIDTHS
from ...storage.aliases import name_problem
from ..deps import Managed
from ..learning_schemas import AcceptanceView, CycleView, LearningPut, PolicyView, RunRequest
from ..params import check_params, parse_int
from ..schemas import errors

router = APIRouter(prefix="/learning", tags=["learning"])
ERR = errors(401, 404, 409, 422, 503)


def _learning(request: Request) -> Learning:
    return request.app.state.learning


def check_alias_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise InvalidInput("alias", f"{name[:40]!r}: {problem}")
    return name


def _alias(request: Request, allowed: tuple[str, ...] = ("alias",)) -> str:
    check_params(request.query_params, allowed)
    return check_alias_name(request.query_params.get("alias", "production"))


@router.get("", response_model=PolicyView, responses=ERR, summary="An alias's learning policy (`?alias=`, default "
            "production) and its state; the defaults while none was set")
async def get_policy(request: Request) -> PolicyView:
    learning = _learning(request)
    return PolicyView(**await learning.db.run(learning.policy, _alias(request)))


@router.put("", response_model=PolicyView, responses=ERR, dependencies=[Managed],
            summary="Set an alias's learning policy; fields left out keep their values (the defaults at first)")
async def put_policy(request: Request, body: LearningPut) -> PolicyView:
    learning = _learning(request)
    return PolicyView(**await learning.db.run(learning.put, check_alias_name(body.alias), body.changes()))


@router.post("/run", status_code=202, response_model=CycleView, responses=ERR, dependencies=[Managed],
             summary="Start a cycle now, whether the policy is on or not (409 while one is open)")
async def run(request: Request, body: RunRequest) -> CycleView:
    learning = _learning(request)
    return CycleView(**await learning.db.run(learning.run_now, check_alias_name(body.alias)))


@router.get("/acceptance", response_model=AcceptanceView, responses=ERR,
            summary="Acceptance over time per model on the alias's usage (`?alias=`, `?width=` minute, hour or day)")
async def acceptance(request: Request) -> AcceptanceView:
    alias = _alias(request, ("alias", "width"))
    width = request.query_params.get("width", "hour")
    if width not in WIDTHS:
        raise InvalidInput("width", f"must be one of {', '.join(WIDTHS)}, not {width[:20]!r}")
    learning = _learning(request)
    return AcceptanceView(**await learning.db.run(learning.acceptance, alias, width))


@router.get("/cycles", response_model=list[CycleView], responses=ERR,
            summary="Cycles, newest first (`?alias=`, `?limit=` 1 to 100)")
async def list_cycles(request: Request) -> list[CycleView]:
    check_params(request.query_params, ("alias", "limit"))
    given = request.query_params.get("alias")
    alias = check_alias_name(given) if given is not None else None
    limit = parse_int("limit", request.query_params.get("limit", "100"), 1, 100)
    learning = _learning(request)
    return [CycleView(**c) for c in await learning.db.run(learning.cycles, alias, limit)]


@router.get("/cycles/{cycle_id}", response_model=CycleView, responses=ERR, summary="One cycle")
async def get_cycle(request: Request, cycle_id: str) -> CycleView:
    learning = _learning(request)
    return CycleView(**await learning.db.run(learning.cycle, cycle_id))
