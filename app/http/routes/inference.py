"""The inference routes: POST /predict, GET /topk and their batch forms, served as lean routes (app.http.lean).

Each endpoint turns the validated request into the engine's call and returns the engine's finished JSON. `model`
is a model id or an alias (pinning): an alias is resolved here, from the process's followed map (no database),
and the answer names the alias it came through (`alias`: production when the request named no model, null for
a bare model id) beside the model id that answered. A request that names something is let through only to
production, a public alias, the active or a public model, unless it carries the key
(app.security.check_open_model; the middleware has checked the key already). A request may carry a session
(app.http.sessions); /topk answers carry an impression for it. Under a running rollout on the alias, the session
picks the arm (app.rollouts), and the answer names the rollout and the arm; every request is counted per model and
per arm (app.rollouts.live).
"""
from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Request
from starlette.datastructures import QueryParams

from ...errors import InvalidInput
from ...inference.engine import Engine
from ...rollouts.service import Served
from ...security import check_open_model
from ...storage.aliases import PRODUCTION, AliasRow
from ..errors import status_of
from ..lean import LeanRoute
from ..middleware import KEY_STATE
from ..params import check_params, parse_int, parse_token, parse_tokens
from ..schemas import (
    ERRORS,
    MAX_K,
    MODEL_FIELD,
    SESSION,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
    ScoreRequest,
    ScoreResponse,
    TopKBatchRequest,
    TopKBatchResponse,
    TopKResponse,
)
from ..sessions import check_session, session_of

router = APIRouter(tags=["inference"], route_class=LeanRoute)
T = TypeVar("T")


def _engine(request: Request) -> Engine:
    return request.app.state.engine


PRODUCTION_HEAD = b'{"alias":"production",'
NO_ALIAS_HEAD = b'{"alias":null,'


def named(request: Request, name: str | None, session: str | None, shadow_key: str | None = None) -> Served:
    """Where the request goes, if it may name what it names: the model id to serve (None for production's), the
    answer's opening naming the alias (and, under a running rollout, the rollout and the arm), and the rollout arm
    it counts under. Nothing to check when it names none. Under a rollout the arm is chosen from this process's
    copy of the running rollouts (app.rollouts.service), never the database; the candidate was chosen by the
    operator, so the access rule that applies to the name the request gave does not apply to it."""
    state = request.app.state
    if name is None or name == PRODUCTION:
        return state.rollouts.route(PRODUCTION, None, PRODUCTION_HEAD, session, shadow_key)
    alias = allowed(request, name)
    if alias is None:
        return Served(name, NO_ALIAS_HEAD)
    return state.rollouts.route(name, alias.model, b'{"alias":' + json.dumps(name).encode() + b",", session,
                                shadow_key)


def allowed(request: Request, name: str) -> AliasRow | None:
    """The alias `name` is (None: a model id), once the request may name it: with the key, or when it is a public
    alias, the active model or a public one (app.security.check_open_model). `name` is not production."""
    state = request.app.state
    alias = state.registry.aliases.target(name)
    if not request.scope["state"].get(KEY_STATE):
        check_open_model(name, _active_id(request), state.settings.public_models,
                         public_alias=alias is not None and alias.public)
    return alias


def _aliased(head: bytes, body: bytes) -> bytes:
    """The engine's answer (a JSON object) with `alias` first."""
    return head + body[1:]


async def _counted(request: Request, served: Served, answer: Awaitable[bytes]) -> bytes:
    return _aliased(served.head, await counted(request, served, answer))


async def counted(request: Request, served: Served, answer: Awaitable[T]) -> T:
    """The answer, with the request counted in the live metrics per model and per rollout arm (a 5xx is an
    error; an unknown model's 404 counts for no model, so no client can grow the counters)."""
    state = request.app.state
    start = time.perf_counter()
    try:
        body = await answer
    except Exception as exc:
        status = status_of(exc)
        counted = served.model if served.model is not None else _active_id(request)
        if status == 404 and served.model is not None:
            counted = None
        state.rollouts.served(served, counted, status, time.perf_counter() - start)
        raise
    state.rollouts.served(served, served.model if served.model is not None else _active_id(request), 200,
                          time.perf_counter() - start)
    return body


def _active_id(request: Request) -> str | None:
    active = request.app.state.registry.active
    return active.id if active is not None else None


def _max_answer_bytes(request: Request) -> int:
    return request.app.state.settings.max_batch_answer_bytes


@router.post("/predict", response_model=PredictResponse, responses=ERRORS,
             summary="Continue a sequence from a start digit or a prefix (greedy)")
async def predict(request: Request, body: PredictRequest) -> bytes:
    served = named(request, body.model, session_of(request, body.session))
    return await _counted(request, served, _engine(request).predict(served.model, body.tokens, body.attention,
                                                                    body.field))


TOPK_PARAMS = ("start", "prefix", "k", "model", "session")


@router.get("/topk", response_model=TopKResponse, responses=ERRORS,
            summary="The k most likely complete sequences for a start digit or a prefix, best first")
async def topk(request: Request,
               start: Annotated[str | None, Query(description="a start digit; give this or prefix", examples=["7"])] = None,
               prefix: Annotated[str | None, Query(description="comma-separated tokens, e.g. 7,2", examples=["7,2"])] = None,
               k: Annotated[str, Query(description=f"how many suggestions, 1 to {MAX_K}")] = "3",
               model: Annotated[str | None, Query(description=MODEL_FIELD)] = None,
               session: Annotated[str | None, Query(description=SESSION)] = None,
               ) -> bytes:
    """The parameters above describe the query; it is read strictly from the raw query string (app.http.params)."""
    query = request.query_params
    tokens, field, count = topk_query(query)
    given = query.get("session")
    session = session_of(request, None if given is None else check_session(given))
    served = named(request, query.get("model"), session, f"{count}:{tokens}")
    answer = await counted(request, served, _engine(request).topk(served.model, tokens, count, field, session,
                                                                  served.tag, served.head))
    request.app.state.rollouts.shadow_request(served, tokens, count)
    return answer


def topk_query(query: QueryParams) -> tuple[list[int], str, int]:
    """(tokens, the field they came from, k) from /topk's query."""
    check_params(query, TOPK_PARAMS)
    start, prefix = query.get("start"), query.get("prefix")
    if (start is None) == (prefix is None):
        raise InvalidInput("start", "give exactly one of start and prefix")
    count = parse_int("k", query.get("k", "3"), 1, MAX_K)
    if start is not None:
        return [parse_token("start", start)], "start", count
    assert prefix is not None
    return parse_tokens("prefix", prefix), "prefix", count


@router.post("/predict/batch", response_model=PredictBatchResponse, responses=ERRORS,
             summary="Greedy continuations of many prefixes in one request, in request order")
async def predict_batch(request: Request, body: PredictBatchRequest) -> bytes:
    served = named(request, body.model, session_of(request, body.session))
    return await _counted(request, served, _engine(request).predict_batch(served.model, body.prefixes, body.attention,
                                                                          _max_answer_bytes(request)))


@router.post("/topk/batch", response_model=TopKBatchResponse, responses=ERRORS,
             summary="The k most likely sequences for many prefixes in one request, in request order")
async def topk_batch(request: Request, body: TopKBatchRequest) -> bytes:
    session = session_of(request, body.session)
    served = named(request, body.model, session)
    return await _counted(request, served, _engine(request).topk_batch(
        served.model, body.prefixes, body.k, _max_answer_bytes(request), session, served.tag))


@router.post("/score", response_model=ScoreResponse, responses=ERRORS,
             summary="How likely each given sequence is: log P(the rest | its first prefix_length digits)")
async def score(request: Request, body: ScoreRequest) -> bytes:
    served = named(request, body.model, None)
    return await _counted(request, served, _engine(request).score(served.model, body.sequences, body.prefix_length,
                                                                  _max_answer_bytes(request)))
