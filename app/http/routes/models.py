"""The model registry over HTTP: list, describe, activate (hot swap), delete. Each call runs on the registry's
own database lane (bounded: 503 with Retry-After once it is full), never on the event loop."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ...registry import ModelInfo
from ...rollouts import live
from ..deps import Managed, RegistryDep
from ..schemas import errors

router = APIRouter(prefix="/models", tags=["models"])
ERR = errors(401, 404, 409, 422, 503)  # 422: an id FastAPI cannot read; answered as every error is


@router.get("", response_model=list[ModelInfo], summary="Registered models, newest first")
async def list_models(registry: RegistryDep) -> list[ModelInfo]:
    return await registry.db.run(registry.list)


@router.get("/active", response_model=ModelInfo, responses=ERR, summary="The active model")
async def active_model(registry: RegistryDep) -> ModelInfo:
    return await registry.db.run(registry.describe_active)


@router.get("/{model_id}", response_model=ModelInfo, responses=ERR, summary="One model")
async def get_model(request: Request, model_id: str, registry: RegistryDep) -> ModelInfo:
    info = await registry.db.run(registry.describe, model_id)
    store = request.app.state.storage.rollouts
    subject = live.model_subject(info.id)
    counters = await registry.db.run(store.counters, [subject])
    return info.model_copy(update={"live": live.summary(counters.get(subject, {}))})


@router.post("/{model_id}/activate", response_model=ModelInfo, responses=ERR, dependencies=[Managed],
             summary="Make a model active; requests in flight finish on the previous one")
async def activate(model_id: str, registry: RegistryDep) -> ModelInfo:
    return await registry.db.run(registry.activate, model_id)


@router.delete("/{model_id}", status_code=204, responses=ERR, dependencies=[Managed],
               summary="Delete a trained model (not the active or a shipped one)")
async def delete(model_id: str, registry: RegistryDep) -> None:
    await registry.db.run(registry.delete, model_id)
