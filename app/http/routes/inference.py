"""POST /predict and GET /topk."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ...errors import InvalidInput
from ..deps import EngineDep
from ..params import check_params, parse_int, parse_tokens
from ..schemas import (
    ERRORS,
    BatchResponse,
    PredictBatchRequest,
    PredictRequest,
    PredictResponse,
    TopKBatchRequest,
    TopKResponse,
)

router = APIRouter(tags=["inference"])
JSON = "application/json"


@router.post("/predict", response_model=PredictResponse, responses=ERRORS,
             summary="Continue a sequence from a start digit or a prefix (greedy)")
async def predict(body: PredictRequest, engine: EngineDep) -> Response:
    return Response(await engine.predict(body.model, body.tokens, body.attention, body.field), media_type=JSON)


TOPK_PARAMS = ("start", "prefix", "k", "model")
MAX_K = 50


@router.get("/topk", response_model=TopKResponse, responses=ERRORS,
            summary="The k most likely complete sequences for a start digit or a prefix, best first")
async def topk(request: Request, engine: EngineDep,
               start: str | None = Query(None, description="a start digit; give this or prefix", examples=["7"]),
               prefix: str | None = Query(None, description="comma-separated tokens, e.g. 7,2", examples=["7,2"]),
               k: str = Query("3", description=f"how many suggestions, 1 to {MAX_K}"),
               model: str | None = Query(None, description="model id; the active model when left out")) -> Response:
    tokens, field, count = topk_tokens(request.query_params)
    return Response(await engine.topk(model, tokens, count, field), media_type=JSON)


def topk_tokens(query) -> tuple[list[int], str, int]:
    """(tokens, the field they came from, k) from /topk's query, strictly: see app.http.params."""
    check_params(query, TOPK_PARAMS)
    start, prefix = query.get("start"), query.get("prefix")
    if (start is None) == (prefix is None):
        raise InvalidInput("start", "give exactly one of start and prefix")
    count = parse_int("k", query.get("k", "3"), 1, MAX_K)
    if start is not None:
        return [parse_int("start", start, 0, 999_999_999)], "start", count
    return parse_tokens("prefix", prefix), "prefix", count

@router.post("/predict/batch", response_model=BatchResponse, responses=ERRORS,
             summary="Greedy continuations of many prefixes in one request, in request order")
async def predict_batch(body: PredictBatchRequest, engine: EngineDep) -> Response:
    return Response(await engine.predict_batch(body.model, body.prefixes, body.attention), media_type=JSON)


@router.post("/topk/batch", response_model=BatchResponse, responses=ERRORS,
             summary="The k most likely sequences for many prefixes in one request, in request order")
async def topk_batch(body: TopKBatchRequest, engine: EngineDep) -> Response:
    return Response(await engine.topk_batch(body.model, body.prefixes, body.k), media_type=JSON)
