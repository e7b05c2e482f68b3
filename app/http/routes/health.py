"""Liveness, readiness and Prometheus metrics."""
from __future__ import annotations

import asyncio
import contextlib

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..schemas import PROMETHEUS_TEXT, Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="200 while the process serves")
async def healthz() -> Health:
    return Health(status="ok")


def _database_state(engine) -> str:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return "ok"
    except Exception as exc:  # reported, not raised: the model already held keeps being served
        return f"unavailable ({type(exc).__name__})"


PROBE_EVERY_S = 1.0


async def _database(state) -> str:
    """The database's state, probed at most once a second by one thread however often /readyz is asked:
    a flood of probes while the database is away must not fill the thread pool."""
    loop = asyncio.get_running_loop()
    probe = getattr(state, "db_probe", None)
    if probe is None or (probe.done() and loop.time() - state.db_probe_at > PROBE_EVERY_S):
        probe = state.db_probe = asyncio.ensure_future(asyncio.to_thread(_database_state, state.storage.engine))
        state.db_probe_at = loop.time()
    try:
        return await asyncio.wait_for(asyncio.shield(probe), 2.0)
    except TimeoutError:
        return "unavailable (timeout)"


@router.get("/readyz", response_model=Readiness, response_model_exclude_none=True,
            responses={503: {"model": Readiness, "description": "no model is ready; the reason says why"}},
            summary="200 while a model is loaded (even if the database is away); 503 with the reason otherwise")
async def readyz(request: Request) -> Readiness | JSONResponse:
    state = request.app.state
    active = state.registry.active
    database = await _database(state)
    if active is None:
        unready = Readiness(status="unavailable", reason=state.registry.active_error or "starting", database=database)
        return JSONResponse(unready.model_dump(exclude_none=True), status_code=503)
    return Readiness(status="ready", model=active.id, device=str(active.device), database=database,
                     device_note=state.device.note)


@router.get("/metrics", response_class=Response, responses=PROMETHEUS_TEXT, summary="Prometheus text format")
async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.set_active(state.registry.active.id if state.registry.active else None)
    # Jobs change on every replica: count them when scraped. With the database away the other series still matter.
    with contextlib.suppress(Exception):
        await asyncio.to_thread(state.jobs.update_gauge)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
