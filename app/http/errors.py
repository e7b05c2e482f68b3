"""The one place errors become HTTP answers: JSON naming the problem, {"error", "message", "request_id",
"fields"?}, for the service's domain errors, the storage and model layers' errors and FastAPI's own. Under /v2,
the Open Inference Protocol's paths (app.http.oip), the same errors answer in that protocol's shape, {"error":
MESSAGE}, and invalid input is its 400 instead of our 422.

Client input never produces a 500; an unexpected error is logged with its request id and answered by the
middleware without a stack trace. An answer's size is bounded whatever the request: at most MAX_FIELDS field
errors, each message cut to MAX_MESSAGE characters.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.checkpoint import CheckpointError
from model.data import DataError
from model.decoding import PrefixError

from .. import errors as domain
from .. import storage

log = logging.getLogger("seq2seq.errors")
MAX_FIELDS = 20
MAX_MESSAGE = 200
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         408: "request_timeout", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input", 429: "too_many_requests",
         500: "internal_error", 503: "unavailable"}
STATUS = [  # most specific first
    (domain.InvalidInput, 422), (domain.Forbidden, 403), (domain.NotFound, 404), (domain.Conflict, 409), (domain.QuotaExceeded, 409),
    (domain.Busy, 429), (domain.Unavailable, 503),
    (storage.NotFound, 404), (storage.QueueFull, 429), (storage.IntegrityFailure, 503), (storage.Conflict, 409),
    (DataError, 422), (PrefixError, 422), (CheckpointError, 503), (DBAPIError, 503),
]


def status_of(exc: Exception) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_body(request_id: str | None, status: int, message: str, fields: list[dict] | None = None,
               total: int = 0, extra: dict[str, object] | None = None) -> dict[str, object]:
    body: dict[str, object] = {"error": CODES.get(status, "error"), "message": clip(message, 4 * MAX_MESSAGE),
                               "request_id": request_id, **(extra or {})}
    if fields:
        body["fields"] = [{"field": clip(f["field"], 100), "message": clip(f["message"])} for f in fields[:MAX_FIELDS]]
        more = max(total, len(fields)) - MAX_FIELDS
        if more > 0:
            body["more_fields"] = more
    return body


OIP_STATUS = {422: 400}  # the Open Inference Protocol's bad request; every other status is the same in both


def is_oip(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def answer_for(path: str, request_id: str | None, status: int, message: str, fields: list[dict] | None = None,
               total: int = 0, extra: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    """The status and body an error gets on `path`: the protocol's {"error": MESSAGE} under /v2, ours elsewhere."""
    if is_oip(path):
        return OIP_STATUS.get(status, status), {"error": clip(message, 4 * MAX_MESSAGE)}
    return status, error_body(request_id, status, message, fields, total, extra)


def respond(request: Request, status: int, message: str, fields=None, headers=None, total: int = 0,
            extra: dict[str, object] | None = None) -> JSONResponse:
    status, body = answer_for(request.scope["path"], getattr(request.state, "request_id", None), status, message,
                              fields, total, extra)
    return JSONResponse(body, status_code=status, headers=headers)


def explain(exc: Exception) -> tuple[int, str, list[dict] | None, dict | None]:
    """(status, message, fields, headers) for a known error; status 500 for anything else."""
    status = status_of(exc)
    if isinstance(exc, domain.InvalidInput):
        return 422, exc.message, [{"field": exc.field, "message": exc.reason}], None
    if isinstance(exc, CheckpointError):  # the reason only: file paths stay inside
        message = f"a checkpoint cannot be used: {exc.reason}"
    elif isinstance(exc, DBAPIError):  # its text holds the query and the server's address
        message = "the database is unavailable; models already loaded are still served"
    else:
        message = str(exc)
    retry = getattr(exc, "retry_after", None) or RETRY_AFTER.get(type(exc))
    if retry is None and isinstance(exc, DBAPIError):
        retry = 5
    headers = {"Retry-After": str(int(retry))} if retry and status in (429, 503) else None
    return status, message, None, headers


RETRY_AFTER: dict[type, float] = {storage.QueueFull: 10}


def unreadable_json(cause: Exception) -> tuple[str, list[dict]]:
    """What to say of a body Python's JSON parser gave up on (too deep, or a number too long to read)."""
    why = "it is nested too deeply" if isinstance(cause, RecursionError) else clip(str(cause), 120)
    return f"body: the body is not valid JSON: {why}", [{"field": "body", "message": f"not valid JSON: {why}"}]


def validation_answer(errors: Sequence[Any]) -> tuple[str, list[dict], int]:
    """pydantic's errors as (message, fields, total): at most MAX_FIELDS of them, named the way they were sent."""
    fields = []
    for err in errors[:MAX_FIELDS]:
        msg = clip(str(err.get("msg", "invalid")).removeprefix("Value error, "))
        field = _field_name(tuple(err.get("loc", ())))
        if err.get("type") == "json_invalid":
            why = msg.removeprefix("Invalid JSON: ")
            msg, field = "the body is not valid JSON" + (f" ({why})" if why != msg else ""), "body"
        fields.append({"field": field, "message": msg})
    message = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:3])
    if len(errors) > 3:
        message += f"; and {len(errors) - 3} more"
    return message, fields, len(errors)


UNION_TAGS = {("dataset", "corpus"), ("dataset", "random")}  # job_schemas' tagged dataset kinds


def _field_name(loc: tuple) -> str:
    """('body', 'dataset', 'corpus', 'sequences', 0, 4) -> 'dataset.sequences[0][4]'."""
    name, previous = "", None
    for part in loc:
        if (part in ("body", "query", "path") and not name) or (previous, part) in UNION_TAGS:
            continue
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
        previous = part
    return name or "body"


def install(app: FastAPI) -> None:
    async def known_error(request: Request, exc: Exception):
        status, message, fields, headers = explain(exc)
        # a lost compare-and-swap says where the alias is now, for a client that retries
        extra: dict[str, object] | None = {"current_generation": exc.current} if isinstance(exc, storage.StaleGeneration) else None
        return respond(request, status, message, fields, headers, extra=extra)

    for kind, _ in STATUS:
        app.add_exception_handler(kind, known_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        message, fields, total = validation_answer(exc.errors())
        return respond(request, 422, message, fields, total=total)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, (RecursionError, ValueError)):  # the JSON parser gave up
            return respond(request, 422, *unreadable_json(cause))
        return respond(request, exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
