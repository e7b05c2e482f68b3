"""Pure ASGI middleware (no per-request task overhead): request ids, the management key, body limits, request
metrics, and the last word on unexpected errors.

It runs before the body is read, so a request without the key or with a declared oversized body is refused
at no cost. Every request's scope state says whether it carries the valid key (KEY_STATE), so the inference
routes can let it name any model without checking the key again. Metric labels come from closed sets (known
methods, matched route templates), so no client can grow /metrics.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import time

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp

from ..metrics import Metrics
from ..security import ManagedRoutes, key_matches
from .errors import answer_for

log = logging.getLogger("seq2seq.errors")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
KEY_STATE = "management_key"  # scope["state"][KEY_STATE]: the request carries the valid key (or none is needed)
TIMED_OUT = "read_deadline_passed"  # scope["state"][TIMED_OUT]: app.http.protocol closed it for a late body


class RequestIds:
    """Request ids (16 hex digits) without a system call per request: this process's random half, then a count."""

    def __init__(self) -> None:
        self._process = os.urandom(4).hex()
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._process}{next(self._count) & 0xFFFFFFFF:08x}"


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_request_bytes: int, max_job_bytes: int,
                 max_batch_bytes: int, api_key: bytes | None, managed: ManagedRoutes):
        self.app = app
        self.managed = managed
        self.max_batch_bytes = max_batch_bytes
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.max_job_bytes = max_job_bytes
        self.api_key = api_key
        self.ids = RequestIds()

    def _limit(self, path: str) -> int:
        path = path.rstrip("/")
        if path == "/jobs":
            return self.max_job_bytes
        # many prefixes in one request: the batch routes, and the Open Inference Protocol's infer (app.http.oip)
        return self.max_batch_bytes if path.endswith(("/batch", "/infer")) else self.max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = dict(scope["headers"])  # one pass: the request id, the key and the declared length
        given = headers.get(b"x-request-id")
        request_id = given.decode("latin-1")[:64] if given else self.ids.next()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        authorization = headers.get(b"authorization")
        keyed = state[KEY_STATE] = self.api_key is None or (
            authorization is not None and key_matches(authorization, self.api_key))
        status_holder = [0]
        method = scope["method"]
        limit = self._limit(scope["path"])

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*list(message["headers"]), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            declared = int(headers.get(b"content-length", 0))
        except ValueError:
            declared = 0
        try:
            if not keyed and self.managed.need_key(method, scope["path"]):
                await _reply(send_wrapper, scope["path"], 401, request_id, "this endpoint needs the header 'Authorization: Bearer "
                             "<key>'; the key is SEQ2SEQ_API_KEY, or the file api-key in the data directory",
                             [(b"www-authenticate", b"Bearer")])
            elif declared > limit:
                await _reply(send_wrapper, scope["path"], 413, request_id, f"the body exceeds {limit} bytes")
            else:
                received = [0]

                async def receive_limited():
                    message = await receive()
                    if message["type"] == "http.request":
                        received[0] += len(message.get("body", b""))
                        if received[0] > limit:  # a body without Content-Length; the error handlers answer 413
                            raise HTTPException(413, f"the body exceeds {limit} bytes")
                    return message

                await self.app(scope, receive_limited, send_wrapper)
        except ClientDisconnect:  # the client left, or app.http.protocol closed it for a late body: nobody to answer
            status_holder[0] = status_holder[0] or (408 if state.get(TIMED_OUT) else 499)
        except Exception:
            log.exception("unhandled error, request_id=%s", request_id)
            if status_holder[0]:  # the answer has begun: all that is left is to end the connection
                raise
            await _reply(send_wrapper, scope["path"], 500, request_id, "internal error; the request id identifies it in the server log")
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        label = method if method in METHODS else "OTHER"
        status = str(status_holder[0] or 500)
        self.metrics.observe_request(label, path, status, time.perf_counter() - start)


async def _reply(send, path: str, status: int, request_id: str, message: str, headers: list | None = None) -> None:
    status, answer = answer_for(path, request_id, status, message)
    body = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
