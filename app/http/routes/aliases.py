"""Aliases over HTTP: list, read (now or at a time), move (compare-and-swap), delete, history. Reads are open
like GET /models; writes need the key. Each call runs on the registry's database lane, never on the event loop.
An alias under a running rollout shows it (`rollout`), and moving or deleting it is a 409 until the rollout ends
(app.storage.aliases.UnderRollout): a manual move would change the control under the rollout, so it is refused
rather than taken as an abort."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request

from ...registry.aliases import parse_at
from ..deps import Managed, RegistryDep
from ..params import check_params, parse_int
from ..schemas import AliasMoveView, AliasPut, AliasView, errors

router = APIRouter(prefix="/aliases", tags=["aliases"])
ERR = errors(401, 404, 409, 422, 503)
MAX_HISTORY = 1000


@router.get("", response_model=list[AliasView], responses=ERR, summary="Every alias, production first")
async def list_aliases(request: Request, registry: RegistryDep) -> list[AliasView]:
    rollouts = request.app.state.rollouts
    return [AliasView.of(row, rollouts.on(row.name)) for row in await registry.db.run(registry.aliases.list)]


@router.get("/{name}", response_model=AliasView, responses=ERR,
            summary="One alias; with ?at=TIME, what it named then")
async def get_alias(request: Request, name: str, registry: RegistryDep,
                    at: str | None = Query(None, description="an ISO-8601 time (UTC when it has no zone)")) -> AliasView:
    check_params(request.query_params, ("at",))
    when = parse_at(at) if at is not None else None
    row = await registry.db.run(registry.aliases.get, name, when)
    return AliasView.of(row, request.app.state.rollouts.on(name) if when is None else None)


@router.put("/{name}", response_model=AliasView, responses=ERR, dependencies=[Managed],
            summary="Create or move an alias (production: activate); 409 when expected_generation is stale")
async def put_alias(request: Request, name: str, body: AliasPut, registry: RegistryDep) -> AliasView:
    row = await registry.db.run(lambda: registry.aliases.put(
        name, body.model, expected_generation=body.expected_generation, reason=body.reason, public=body.public))
    return AliasView.of(row, request.app.state.rollouts.on(name))


@router.delete("/{name}", status_code=204, responses=ERR, dependencies=[Managed],
               summary="Delete an alias (not production); the deletion is kept in its history")
async def delete_alias(request: Request, name: str, registry: RegistryDep,
                       expected_generation: str | None = Query(None, description="delete only at this generation"),
                       ) -> None:
    check_params(request.query_params, ("expected_generation",))
    expected = parse_int("expected_generation", expected_generation, 0, 2**31 - 1) \
        if expected_generation is not None else None
    await registry.db.run(lambda: registry.aliases.delete(name, expected_generation=expected))


@router.get("/{name}/history", response_model=list[AliasMoveView], responses=ERR,
            summary="Every move of an alias, newest first; with ?at=TIME, those made by then (the first: what it "
                    "named then)")
async def alias_history(request: Request, name: str, registry: RegistryDep,
                        at: str | None = Query(None, description="an ISO-8601 time (UTC when it has no zone)"),
                        limit: str = Query("100", description=f"at most this many, 1 to {MAX_HISTORY}"),
                        ) -> list[AliasMoveView]:
    check_params(request.query_params, ("at", "limit"))
    count = parse_int("limit", limit, 1, MAX_HISTORY)
    when = parse_at(at) if at is not None else None
    moves = await registry.db.run(lambda: registry.aliases.history(name, at=when, limit=count))
    return [AliasMoveView.of(move) for move in moves]
