"""The web page at / and the little it needs to know about the server."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ...errors import NotFound
from ..schemas import Corpus, Info, errors

STATIC = Path(__file__).resolve().parents[2] / "static"
router = APIRouter(tags=["page"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/info", response_model=Info,
            summary="What a client needs to know: version, whether an API key is required, the active model")
async def info(request: Request) -> Info:
    state = request.app.state
    active = None
    if state.registry.active is not None:
        active = await state.registry.db.run(state.registry.describe, state.registry.active.id)
    return Info(version=request.app.version, auth_required=state.api_key is not None,
                active_model=active)


@router.get("/info/corpus", response_model=Corpus, responses=errors(404),
            summary="The corpus the shipped default model was trained on")
async def corpus(request: Request) -> Corpus:
    path = request.app.state.settings.weights_dir / "corpus.json"
    if not path.is_file():
        raise NotFound("no corpus ships with this server")
    return Corpus.model_validate_json(path.read_bytes())
