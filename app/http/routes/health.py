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
            summary="200 while a model is served (ready, or degraded with the reason); 503 with the reason otherwise")
async def readyz(request: Request) -> Readiness | JSONResponse:
    """Degraded is 200 on purpose: the replica answers inference with a fallback model and its management API
    works, which is what mends the cause; a 503 would take every replica out of rotation at once when the
    active model cannot load anywhere (a rolling restart would then leave no replica serving)."""
    state = request.app.state
    registry = state.registry
    active = registry.active
    database = await _database(state)
    if active is None:
        unready = Readiness(status="unavailable", reason=registry.active_error or "starting", database=database,
                            active_model=registry.pointer_model)
        return JSONResponse(unready.model_dump(exclude_none=True), status_code=503)
    degraded = registry.degraded
    return Readiness(status="degraded" if degraded else "ready", model=active.id, active_model=registry.pointer_model,
                     device=str(active.device), database=database, device_note=state.device.note, reason=degraded)


async def _gauges(state) -> None:
    """Count jobs by status for a scrape, by one thread at a time, waiting at most 2 s: a scrape while the database
    is away answers without the job series instead of hanging and taking a pool thread each time."""
    task = getattr(state, "gauge_task", None)
    if task is None or task.done():
        task = state.gauge_task = asyncio.ensure_future(asyncio.to_thread(state.jobs.update_gauge))
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(task), 2.0)


@router.get("/metrics", response_class=Response, responses=PROMETHEUS_TEXT, summary="Prometheus text format")
async def metrics(request: Request) -> Response:
    state = request.app.state
    state.metrics.set_active(state.registry.active.id if state.registry.active else None)
    # Jobs change on every replica: count them when scraped. With the database away the other series still matter.
    await _gauges(state)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
