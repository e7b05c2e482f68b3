"""The model registry over HTTP: list, describe, activate (hot swap), delete."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter

from ..deps import Managed, RegistryDep
from ..schemas import ErrorResponse

router = APIRouter(prefix="/models", tags=["models"])
ERR = {code: {"model": ErrorResponse} for code in (401, 404, 409, 503)}


@router.get("", summary="Registered models, newest first")
async def list_models(registry: RegistryDep) -> list[dict]:
    return await asyncio.to_thread(registry.list)


@router.get("/active", responses=ERR, summary="The active model")
async def active_model(registry: RegistryDep) -> dict:
    return await asyncio.to_thread(registry.describe, registry.active_id())


@router.get("/{model_id}", responses=ERR, summary="One model")
async def get_model(model_id: str, registry: RegistryDep) -> dict:
    return await asyncio.to_thread(registry.describe, model_id)


@router.post("/{model_id}/activate", responses=ERR, dependencies=[Managed],
             summary="Make a model active; requests in flight finish on the previous one")
async def activate(model_id: str, registry: RegistryDep) -> dict:
    return await asyncio.to_thread(registry.activate, model_id)


@router.delete("/{model_id}", status_code=204, responses=ERR, dependencies=[Managed],
               summary="Delete a trained model (not the active or a shipped one)")
async def delete(model_id: str, registry: RegistryDep) -> None:
    await asyncio.to_thread(registry.delete, model_id)
