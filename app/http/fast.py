"""The two hot routes, POST /predict and GET /topk, served straight from ASGI.

FastAPI's per-request machinery (dependency solving, its own body reading and validation layers, the
response classes) cost about as much CPU as decoding itself: under load the process spent half its time
there. These two routes need none of it: the same pydantic model validates the body (from the raw bytes,
in Rust), the same strict parser reads the query, the same engine answers, and errors go through the same
mapping as every other route (app.http.errors). The FastAPI routes in routes/inference.py stay as the
OpenAPI description of these paths and serve any request this layer passes on.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException

from .errors import error_body, explain, unreadable_json, validation_answer
from .routes.inference import topk_tokens
from .schemas import PredictRequest

JSON_HEADERS = [(b"content-type", b"application/json")]
ROUTES = {("POST", "/predict"): SimpleNamespace(path="/predict"), ("GET", "/topk"): SimpleNamespace(path="/topk")}


class FastInference:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        route = ROUTES.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        engine = getattr(scope.get("app"), "state", None) and getattr(scope["app"].state, "engine", None) \
            if route is not None else None
        if route is None or engine is None:
            return await self.app(scope, receive, send)
        scope["route"] = route  # the metrics' route label
        request_id = scope.get("state", {}).get("request_id")
        try:
            if route.path == "/predict":
                body = PredictRequest.model_validate(_json(await _body(receive), scope["headers"]), from_attributes=True)
                answer = await engine.predict(body.model, body.tokens, body.attention, body.field)
            else:
                query = QueryParams(scope["query_string"])
                tokens, field, k = topk_tokens(query)
                answer = await engine.topk(query.get("model"), tokens, k, field)
            status, headers = 200, JSON_HEADERS
        except HTTPException as exc:  # the body limit, raised while the body is read
            answer, status, headers = _error(request_id, exc.status_code, str(exc.detail), None, None)
        except ValidationError as exc:
            message, fields, total = validation_answer(exc.errors())
            answer, status, headers = _error(request_id, 422, message, fields, None, total)
        except UnreadableBody as exc:
            answer, status, headers = _error(request_id, 422, exc.message, exc.fields, None)
        except Exception as exc:
            status, message, fields, extra = explain(exc)
            if status == 500:
                raise  # the middleware logs it and answers 500 with the request id
            answer, status, headers = _error(request_id, status, message, fields, extra)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


MISSING = ValidationError.from_exception_data("PredictRequest", [{"type": "missing", "loc": ("body",), "input": None}])


def _json(raw: bytes, headers) -> object:
    """The body as FastAPI reads it: JSON only under a JSON content type; otherwise the bytes themselves,
    which the schema refuses (so a form or text/plain post is never read as JSON)."""
    if not raw:
        raise MISSING
    kind = next((v for k, v in headers if k == b"content-type"), b"").split(b";")[0].strip().lower()
    if kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json")):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise UnreadableBody("body: the body is not valid JSON",
                                 [{"field": "body", "message": "the body is not valid JSON"}]) from None
        except (RecursionError, ValueError) as exc:  # too deep, or a number too long to read: as FastAPI says it
            raise UnreadableBody(*unreadable_json(exc)) from None
    return raw


class UnreadableBody(Exception):
    def __init__(self, message: str, fields: list[dict]):
        super().__init__(message)
        self.message, self.fields = message, fields


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _error(request_id, status: int, message: str, fields, extra: dict | None, total: int = 0):
    body = json.dumps(error_body(request_id, status, message, fields, total)).encode()
    headers = JSON_HEADERS + [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
    return body, status, headers
