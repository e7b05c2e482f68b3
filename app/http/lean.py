"""LeanRoute: the hot routes' route class. FastAPI routes, documents and guards these routes like any other;
their requests skip only the per-request machinery that costs.

A LeanRoute is an APIRoute, so the app's router matches it, the metrics label it by its template, OpenAPI
describes it from the endpoint's signature (body model, query parameters, response model), and the app's
exception handlers answer its errors with the one error body (app.http.errors). Its handler reads the body
and validates it with one pydantic call on the raw bytes (parsed and checked in Rust), then calls the
endpoint with the typed value. Dependency solving, FastAPI's body reading and response validation are
skipped: the endpoint returns finished JSON bytes, which the engine builds once and caches (answered 200), or
(status, bytes) when the status varies (POST /feedback: 202 for a new event, 200 for a repeat), or a Reply when
the type or headers vary too (app.http.oip's binary tensors). Path parameters come as keyword arguments.

The body contract, the same for every lean route whatever FastAPI version is installed:
- a Content-Type other than application/json or application/*+json (parameters allowed) is 415, naming it;
  a request without one is read as JSON;
- an empty body is 422 naming `body`; JSON that does not parse is 422 naming `body`;
- the schema's errors are 422 naming each field the way the client sent it.
"""
from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NamedTuple, TypeVar

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, _get_scope_effective_route_context
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

JSON = "application/json"
M = TypeVar("M", bound=BaseModel)


class Reply(NamedTuple):
    """An answer with its own status, content type or extra headers (a tuple: made on every Open Inference
    Protocol request, where a frozen dataclass took a microsecond to build)."""
    body: bytes
    status: int = 200
    content_type: bytes = JSON.encode()
    headers: tuple[tuple[bytes, bytes], ...] = ()


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


async def read_body(receive: Receive) -> bytes:
    """The whole request body, as Starlette's Request.body() reads it, without its stream machinery."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    body = message.get("body", b"")
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body += message.get("body", b"")
    return body


def _content_type(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"content-type":
            return value.decode("latin-1")
    return None


def _body_model(endpoint: Callable[..., Awaitable[bytes]]) -> type[BaseModel] | None:
    """The pydantic model of the endpoint's `body` parameter, if it has one."""
    parameter = inspect.signature(endpoint, eval_str=True).parameters.get("body")
    if parameter is None:
        return None
    model = parameter.annotation
    assert inspect.isclass(model) and issubclass(model, BaseModel), "a lean route's body is a pydantic model"
    return model


class LeanRoute(APIRoute):
    """Its ASGI app reads the request and writes the answer itself: no Request-scoped exit stacks, no handler
    wrapper per request. Errors propagate to the app's ExceptionMiddleware, whose handlers are the app's own.
    get_route_handler builds the same answer for FastAPI's request/response wrapper, which FastAPI uses only
    when the route is included through include_router (create_app adds routes to the app's table directly)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self._body_model = _body_model(endpoint)
        self._literal = self.path_format.split("{", 1)[0]  # every path this route matches starts with it
        self.app = self._serve

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """The router asks every route in turn: a path that cannot be this route's is told so without the path
        regex and FastAPI's route-context lookups (the hot routes come first, so every request asks them)."""
        if not scope.get("root_path") and not scope["path"].startswith(self._literal) \
                and _get_scope_effective_route_context(scope) is None:
            return Match.NONE, {}
        return super().matches(scope)

    async def _answer(self, request: Request) -> tuple[int, bytes] | Reply:
        if self._body_model is None:
            answer = await self.endpoint(request=request, **request.path_params)
        else:
            body = parse_body(self._body_model, _content_type(request.scope), await request.body())
            answer = await self.endpoint(request=request, body=body, **request.path_params)
        return (200, answer) if isinstance(answer, bytes) else answer

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if scope["method"] != "GET":
            request._body = await read_body(receive)  # what request.body() returns from now on
        answer = await self._answer(request)
        if isinstance(answer, Reply):
            await send({"type": "http.response.start", "status": answer.status,
                        "headers": [(b"content-type", answer.content_type),
                                    (b"content-length", b"%d" % len(answer.body)), *answer.headers]})
            await send({"type": "http.response.body", "body": answer.body})
            return
        status, body = answer
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def handler(request: Request) -> Response:
            answer = await self._answer(request)
            if isinstance(answer, Reply):
                return Response(answer.body, status_code=answer.status, media_type=answer.content_type.decode(),
                                headers={k.decode(): v.decode() for k, v in answer.headers})
            status, body = answer
            return Response(body, status_code=status, media_type=JSON)

        return handler
