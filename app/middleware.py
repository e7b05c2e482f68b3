"""Pure ASGI middleware (no per-request task overhead): request ids, body limits, request metrics."""
from __future__ import annotations

import json
import time
import uuid

from starlette.exceptions import HTTPException

from .metrics import Metrics


class ServiceMiddleware:
    def __init__(self, app, metrics: Metrics, max_request_bytes: int, max_job_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.max_job_bytes = max_job_bytes

    def _limit(self, path: str) -> int:
        return self.max_job_bytes if path.rstrip("/") == "/jobs" else self.max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        headers = dict(scope["headers"])  # one pass: the request id and the declared length
        given = headers.get(b"x-request-id")
        request_id = given.decode("latin-1")[:64] if given else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = [500]
        limit = self._limit(scope["path"])

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        try:
            too_large = int(headers.get(b"content-length", 0)) > limit
        except ValueError:
            too_large = False
        if too_large:
            await self._reject(send_wrapper, request_id, limit)
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
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        status = str(status_holder[0])
        elapsed = time.perf_counter() - start
        self.metrics.requests.labels(scope["method"], path, status).inc()
        self.metrics.latency.labels(scope["method"], path, status).observe(elapsed)

    @staticmethod
    async def _reject(send, request_id: str, limit: int) -> None:
        body = json.dumps({"error": "payload_too_large", "message": f"the body exceeds {limit} bytes",
                           "request_id": request_id}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
