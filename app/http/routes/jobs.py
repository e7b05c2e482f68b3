"""Training jobs over HTTP: submit, list, follow (Server-Sent Events), cancel."""
from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ...errors import Busy
from ...jobs import TERMINAL, JobService
from ..deps import Managed
from ..job_schemas import JobRequest
from ..params import check_params, parse_int
from ..schemas import ErrorResponse

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Managed])
ERR = {code: {"model": ErrorResponse} for code in (401, 404, 409, 413, 422, 429)}


async def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs


JobsDep = Annotated[JobService, Depends(get_jobs)]


@router.post("", status_code=202, responses=ERR, summary="Start a training job")
async def submit(body: JobRequest, jobs: JobsDep) -> JSONResponse:
    job = await asyncio.to_thread(jobs.submit, body.model_dump(exclude_none=True))
    jobs.wake()
    return JSONResponse(job, status_code=202, headers={"Location": f"/jobs/{job['id']}"})


@router.get("", summary="Jobs, newest first")
async def list_jobs(request: Request, jobs: JobsDep,
                    limit: str = Query("100", description="at most this many, 1 to 1000")) -> list[dict]:
    check_params(request.query_params, ("limit",))
    return await asyncio.to_thread(jobs.list, parse_int("limit", limit, 1, 1000))


@router.get("/{job_id}", responses=ERR, summary="One job: status, progress, history, outcome")
async def get_job(job_id: str, jobs: JobsDep) -> dict:
    return await asyncio.to_thread(jobs.get, job_id)


@router.post("/{job_id}/cancel", responses=ERR, summary="Stop a queued or running job (409 once it has ended)")
async def cancel(job_id: str, jobs: JobsDep) -> dict:
    return await jobs.cancel(job_id)


@router.delete("/{job_id}", status_code=204, responses=ERR, summary="Forget a finished job (its model stays)")
async def delete(job_id: str, jobs: JobsDep) -> None:
    await asyncio.to_thread(jobs.delete, job_id)


@router.get("/{job_id}/events", responses=ERR, summary="Server-Sent Events: the job as it changes, then its final state",
            response_class=StreamingResponse)
async def events(job_id: str, jobs: JobsDep, request: Request) -> StreamingResponse:
    first = await asyncio.to_thread(jobs.get, job_id)  # 404 before the stream starts
    state = request.app.state
    limit = state.settings.max_event_streams
    if state.event_streams >= limit:
        raise Busy(f"{limit} event streams are open (SEQ2SEQ_MAX_EVENT_STREAMS); poll GET /jobs/{job_id} "
                   "or try again later", retry_after=5)
    state.event_streams += 1
    released = [False]

    def release() -> None:
        if not released[0]:
            released[0] = True
            state.event_streams -= 1

    async def follow():
        job, last = first, None
        while True:
            text = json.dumps(job)
            if text != last:
                last = text
                kind = "end" if job["status"] in TERMINAL else "progress"
                yield f"event: {kind}\ndata: {text}\n\n"
                if kind == "end":
                    return
            else:
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await jobs.wait_for_change(timeout=0.5)  # a job on another replica changes only in the database
            await asyncio.sleep(0.1)  # at most ~10 events a second, however fast the job reports
            job = await asyncio.to_thread(jobs.get, job_id)

    return StreamingResponse(_Counted(follow(), release), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _Counted:
    """An event stream that gives its slot back however it ends: finished, failed, or never started at all."""

    def __init__(self, stream, release):
        self.stream, self.release = stream, release

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.stream.__anext__()
        except BaseException:
            self.release()
            raise

    def __del__(self):
        self.release()
