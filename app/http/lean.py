"""LeanRoute: the hot routes' route class. FastAPI routes, documents and guards these routes like any other;
their requests skip only the per-request machinery that costs.

A LeanRoute is an APIRoute, so the app's router matches it, the metrics label it by its template, OpenAPI
describes it from the endpoint's signature (body model, query parameters, response model), and the app's
exception handlers answer its errors with the one error body (app.http.errors). Its handler reads the body
and validates it with one pydantic call on the raw bytes (parsed and checked in Rust), then calls the
endpoint with the typed value. Dependency solving, FastAPI's body reading and response validation are
skipped: the endpoint returns finished JSON bytes, which the engine builds once and caches.

The body contract, the same for every lean route whatever FastAPI version is installed:
- a Content-Type other than application/json or application/*+json (parameters allowed) is 415, naming it;
  a request without one is read as JSON;
- an empty body is 422 naming `body`; JSON that does not parse is 422 naming `body`;
- the schema's errors are 422 naming each field the way the client sent it.
"""
from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

JSON = "application/json"
Endpoint = Callable[..., Awaitable[bytes]]
M = TypeVar("M", bound=BaseModel)


def is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == JSON or (kind.startswith("application/") and kind.endswith("+json"))


def parse_body(model: type[M], content_type: str | None, raw: bytes) -> M:
    if content_type is not None and not is_json(content_type):
        raise HTTPException(415, f"the body must be JSON (Content-Type: application/json); got {content_type[:60]!r}")
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "a JSON body is required"}])
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False, include_input=False)) \
            from None


def _body_model(endpoint: Endpoint) -> type[BaseModel] | None:
    """The pydantic model of the endpoint's `body` parameter, if it has one."""
    parameter = inspect.signature(endpoint, eval_str=True).parameters.get("body")
    if parameter is None:
        return None
    model = parameter.annotation
    assert inspect.isclass(model) and issubclass(model, BaseModel), "a lean route's body is a pydantic model"
    return model


class LeanRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Endpoint = self.endpoint
        body_model = _body_model(endpoint)

        async def handler(request: Request) -> Response:
            if body_model is None:
                answer = await endpoint(request=request)
            else:
                body = parse_body(body_model, request.headers.get("content-type"), await request.body())
                answer = await endpoint(request=request, body=body)
            return Response(answer, media_type=JSON)

        return handler
