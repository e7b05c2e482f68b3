"""The web page at / and the little it needs to know about the server."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ...errors import NotFound

STATIC = Path(__file__).resolve().parents[2] / "static"
router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/info", summary="What a client needs to know: version, whether an API key is required, the active model")
async def info(request: Request) -> dict:
    state = request.app.state
    active = None
    if state.registry.active is not None:
        active = await asyncio.to_thread(state.registry.describe, state.registry.active.id)
    return {"version": request.app.version, "auth_required": state.api_key is not None, "active_model": active}


@router.get("/info/corpus", summary="The corpus the shipped default model was trained on")
async def corpus(request: Request) -> dict:
    path = request.app.state.settings.weights_dir / "corpus.json"
    if not path.is_file():
        raise NotFound("no corpus ships with this server")
    return json.loads(path.read_text())
