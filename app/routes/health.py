"""Liveness, readiness and Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="200 while the process serves")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="200 once a model is loaded; 503 with the reason otherwise")
async def readyz(request: Request):
    registry = request.app.state.registry
    active = registry.active
    if active is None:
        return JSONResponse({"status": "unavailable", "reason": registry.active_error or "starting"}, status_code=503)
    body = {"status": "ready", "model": active.id, "device": str(active.device)}
    if registry.device_note:
        body["device_note"] = registry.device_note
    return body


@router.get("/metrics", summary="Prometheus text format")
async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.set_active(state.registry.active.id if state.registry.active else None)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
