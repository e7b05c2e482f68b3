"""The Open Inference Protocol (KServe v2) over HTTP, beside the service's own API: health, server and model
metadata, model readiness and infer, so that tritonclient, the KServe SDK and other tooling talk to this service.

A model name is what /predict's `model` takes, an alias or a model id, under the same access rule
(app.http.routes.inference.allowed); its versions are the model ids the alias has pointed to, newest first (a
model id's only version is itself). Without a version a request goes where /predict/batch's would (production's
rollout arm, by session); with one it is pinned to that model id, which without the key must itself be open.

Infer is a lean route on the batch routes' path: the engine's greedy_answers and topk_answers (the prefix rule,
pricing, cache, batcher) after the answer's bound in this encoding (app.inference.answer_size.oip), counted per model
and rollout arm like every inference request. Errors are the protocol's {"error": MESSAGE} (app.http.errors).
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Request

from ...errors import NotFound, Unavailable
from ...feedback.impressions import encoded_length
from ...inference import answer_size
from ...inference.engine import check_answer_size
from ...rollouts.service import Served
from ...security import check_open_model
from ...storage.aliases import HISTORY_LIMIT, PRODUCTION, AliasRow
from ..lean import LeanRoute, Reply
from ..middleware import KEY_STATE
from ..routes.inference import allowed, counted, named
from ..sessions import session_of
from . import codec
from .schemas import (
    ERRORS,
    EXTENSIONS,
    INFER_BODY,
    InferenceResponse,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
    model_metadata,
)

TAG = "open inference protocol"
router = APIRouter(prefix="/v2", tags=[TAG], responses=ERRORS)
infer_router = APIRouter(prefix="/v2", tags=[TAG], responses=ERRORS, route_class=LeanRoute)


# -- health and server metadata ------------------------------------------------------------------------
@router.get("/health/live", response_model=Live, summary="200 while the process serves")
async def live() -> Live:
    return Live(live=True)


@router.get("/health/ready", response_model=Ready, summary="200 while a model is served; 503 with the reason")
async def ready(request: Request) -> Ready:
    registry = request.app.state.registry
    if registry.active is None:
        raise Unavailable(f"no model is ready: {registry.active_error or 'starting'}")
    return Ready(ready=True)


@router.get("", response_model=ServerMetadata, summary="The server's name, version and protocol extensions")
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name="seq2seq-serve", version=request.app.version, extensions=EXTENSIONS)


# -- names and versions --------------------------------------------------------------------------------
def _keyed(request: Request) -> bool:
    return bool(request.scope["state"].get(KEY_STATE))


def _active_id(request: Request) -> str | None:
    active = request.app.state.registry.active
    return active.id if active is not None else None


def _now(request: Request, name: str) -> tuple[AliasRow | None, str | None]:
    """The alias `name` is (None: production or a model id) and the model id it names now (None: production's
    active model), once the request may name it."""
    if name == PRODUCTION:
        return None, None
    alias = allowed(request, name)
    return alias, alias.model if alias is not None else name


async def _versions(request: Request, name: str, alias: AliasRow | None) -> list[str]:
    """Newest first: the model ids an alias has named (its history, on the registry's database lane), or the id."""
    if name != PRODUCTION and alias is None:
        return [name]
    registry = request.app.state.registry
    moves = await registry.db.run(lambda: registry.aliases.history(name, limit=HISTORY_LIMIT))
    return list(dict.fromkeys(move.model for move in moves if move.model is not None))


async def _pinned(request: Request, name: str, version: str) -> str:
    """The model id a versioned request runs on: `version`, if `name` has pointed to it and the request may name
    it (an older version is a model id like any other: without the key it must be active or public)."""
    alias, now = _now(request, name)
    if version == (now if now is not None else _active_id(request)):
        return version
    if not _keyed(request):
        check_open_model(version, _active_id(request), request.app.state.settings.public_models)
    if version not in await _versions(request, name, alias):
        raise NotFound(f"model {name!r} has no version {version[:64]!r}; GET /v2/models/{name} lists its versions")
    return version


async def _model(request: Request, name: str, version: str | None):
    """The loaded model a metadata or readiness request is about: the version, or what the name names now."""
    model_id = await _pinned(request, name, version) if version is not None else _now(request, name)[1]
    return await request.app.state.engine.resolve(model_id)


async def _metadata(request: Request, name: str, version: str | None) -> ModelMetadata:
    loaded = await _model(request, name, version)
    alias = request.app.state.registry.aliases.target(name) if name != PRODUCTION else None
    return model_metadata(name, await _versions(request, name, alias), loaded.id, loaded.config)


@router.get("/models/{name}", response_model=ModelMetadata, summary="A model's inputs, outputs and versions")
async def model(request: Request, name: str) -> ModelMetadata:
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata,
            summary="One version's inputs, outputs, and the name's versions")
async def model_version(request: Request, name: str, version: str) -> ModelMetadata:
    return await _metadata(request, name, version)


@router.get("/models/{name}/ready", response_model=ModelReady,
            summary="200 once the model is loaded (it is loaded if it is not); an error otherwise")
async def model_ready(request: Request, name: str) -> ModelReady:
    await _model(request, name, None)
    return ModelReady(name=name, ready=True)


@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReady,
            summary="200 once the version is loaded (it is loaded if it is not); an error otherwise")
async def model_version_ready(request: Request, name: str, version: str) -> ModelReady:
    await _model(request, name, version)
    return ModelReady(name=name, ready=True)


# -- infer ---------------------------------------------------------------------------------------------
INFER = ("N prefixes in, their greedy continuations (sequence, probability) and, with parameters.k, their top k "
         "(topk_sequences, topk_probabilities) out; JSON or binary tensors")


@infer_router.post("/models/{name}/infer", response_model=InferenceResponse, openapi_extra=INFER_BODY,
                   summary=INFER)
async def infer(request: Request, name: str) -> Reply:
    return await _infer(request, name, None)


@infer_router.post("/models/{name}/versions/{version}/infer", response_model=InferenceResponse,
                   openapi_extra=INFER_BODY, summary=INFER + "; one version")
async def infer_version(request: Request, name: str, version: str) -> Reply:
    return await _infer(request, name, version)


def _headers(request: Request) -> tuple[str | None, str | None]:
    """Inference-Header-Content-Length and Content-Type, in one pass over the raw headers."""
    length = kind = None
    for key, value in request.scope["headers"]:
        if key == codec.HEADER_LENGTH_KEY:
            length = value.decode("latin-1")
        elif key == b"content-type":
            kind = value.decode("latin-1")
    return length, kind


async def _infer(request: Request, name: str, version: str | None) -> Reply:
    asked = codec.parse(await request.body(), *_headers(request))
    session = session_of(request, asked.session)
    served = named(request, name, session) if version is None else Served(await _pinned(request, name, version), b"")
    return await counted(request, served, _answer(request, name, served, asked, session))


async def _answer(request: Request, name: str, served: Served, asked: codec.InferRequest,
                  session: str | None) -> Reply:
    state = request.app.state
    engine = state.engine
    loaded = await engine.resolve(served.model)
    rows, k = len(asked.prefixes), asked.k if asked.topk and asked.k is not None else 0
    tag = served.tag
    minting = asked.topk and engine.minting
    token = encoded_length(loaded.id, len(asked.prefixes[0]), k, len(session or ""),
                           None if tag is None else len(tag)) if minting else 0
    size = answer_size.oip(loaded.config, name, loaded.id, rows, k, asked.outputs,
                           len(json.dumps(asked.id)) if asked.id is not None else 0, token)
    limit = state.settings.max_batch_answer_bytes
    if size > limit:  # the message only when it is needed
        check_answer_size(size, limit, rows, f"the outputs {', '.join(output for output, _ in asked.outputs)}",
                          loaded, ", or ask for fewer outputs" + (" or a smaller k" if k else ""), field=codec.INPUT)
    greedy = await engine.greedy_answers(loaded, asked.prefixes, field=codec.INPUT) if asked.greedy else []
    topk = await engine.topk_answers(loaded, asked.prefixes, k, field=codec.INPUT) if k else []
    parameters: dict[str, str] = {}
    if served.rollout is not None and served.arm is not None:
        parameters["rollout"] = served.rollout.id
        parameters["arm"] = "control" if served.arm == "shadow" else served.arm
    if minting:
        tokens = [engine.impression(answer, session, tag) for answer in topk]
        if all(t is not None for t in tokens):
            parameters["impressions"] = b",".join(tokens).decode()
    if rows == 1 and not parameters and asked.outputs == codec.SINGLE_ROW_OUTPUTS:
        answer = greedy[0]
        return codec.greedy_row(name, loaded.id, asked.id, answer.sequences[0], answer.probabilities[0],
                                loaded.config.seq_length)
    return codec.encode(name, loaded.id, asked.id, parameters,
                        codec.tensors(asked, greedy, topk, loaded.config.seq_length), dict(asked.outputs))
