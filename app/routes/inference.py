"""POST /predict and GET /topk."""
from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ..deps import EngineDep
from ..errors import InputError
from ..schemas import ERRORS, MAX_PREFIX, PredictRequest, PredictResponse, TopKResponse

router = APIRouter(tags=["inference"])
JSON = "application/json"


@router.post("/predict", response_model=PredictResponse, responses=ERRORS,
             summary="Continue a sequence from a start digit or a prefix (greedy)")
async def predict(body: PredictRequest, engine: EngineDep) -> Response:
    return Response(await engine.predict(body.model, body.tokens, body.attention, body.field), media_type=JSON)


def _parse_prefix(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p.lstrip("-").isdigit() for p in parts):
        raise InputError("prefix", f"must be comma-separated integers such as 7,2; got {text[:40]!r}")
    if len(parts) > MAX_PREFIX:
        raise InputError("prefix", f"has {len(parts)} tokens; at most {MAX_PREFIX}")
    return [int(p) for p in parts]


@router.get("/topk", response_model=TopKResponse, responses=ERRORS,
            summary="The k most likely complete sequences for a start digit or a prefix, best first")
async def topk(engine: EngineDep,
               start: int | None = Query(None, description="a start digit; give this or prefix", examples=[7]),
               prefix: str | None = Query(None, description="comma-separated tokens, e.g. 7,2", examples=["7,2"]),
               k: int = Query(3, ge=1, le=50, description="how many suggestions"),
               model: str | None = Query(None, description="model id; the active model when left out")) -> Response:
    if (start is None) == (prefix is None):
        raise InputError("start", "give exactly one of start and prefix")
    tokens, field = ([start], "start") if start is not None else (_parse_prefix(prefix), "prefix")
    return Response(await engine.topk(model, tokens, k, field), media_type=JSON)
