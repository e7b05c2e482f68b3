"""Training jobs over HTTP: submit, list, follow (Server-Sent Events), cancel."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from ...errors import Busy
from ...jobs import JobService
from ..deps import Managed
from ..job_schemas import JobRequest, JobView
from ..params import check_params, parse_int
from ..schemas import ErrorResponse

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[Managed])
ERR: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 404, 409, 413, 422, 429)}
EVENTS: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {"schema": {
    "type": "string", "description": 'events "progress" (data: the job, as GET /jobs/{id}) as it changes, then '
                                     'one "end" with its final state; comments keep the connection alive'}}}}}


async def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs


JobsDep = Annotated[JobService, Depends(get_jobs)]


@router.post("", status_code=202, response_model=JobView, responses=ERR, summary="Start a training job")
async def submit(body: JobRequest, jobs: JobsDep, response: Response) -> JobView:
    job = await jobs.db.run(lambda: jobs.submit(body.to_spec()))  # the model's rules walk the data: off the loop
    jobs.wake()
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobView.of(job)


@router.get("", response_model=list[JobView], responses=ERR, summary="Jobs, newest first")
async def list_jobs(request: Request, jobs: JobsDep,
                    limit: str = Query("100", description="at most this many, 1 to 1000")) -> list[JobView]:
    check_params(request.query_params, ("limit",))
    found = await jobs.db.run(jobs.list, parse_int("limit", limit, 1, 1000))
    return [JobView.of(job) for job in found]


@router.get("/{job_id}", response_model=JobView, responses=ERR, summary="One job: status, progress, history, outcome")
async def get_job(job_id: str, jobs: JobsDep) -> JobView:
    return JobView.of(await jobs.db.run(jobs.get, job_id))


@router.post("/{job_id}/cancel", response_model=JobView, responses=ERR,
             summary="Stop a queued or running job (409 once it has ended)")
async def cancel(job_id: str, jobs: JobsDep) -> JobView:
    return JobView.of(await jobs.cancel(job_id))


@router.delete("/{job_id}", status_code=204, responses=ERR, summary="Forget a finished job (its model stays)")
async def delete(job_id: str, jobs: JobsDep) -> None:
    await jobs.db.run(jobs.delete, job_id)


@router.get("/{job_id}/events", responses={**ERR, **EVENTS}, response_class=StreamingResponse,
            summary="Server-Sent Events: the job as it changes, then its final state")
async def events(job_id: str, jobs: JobsDep, request: Request) -> StreamingResponse:
    first = await jobs.db.run(jobs.get, job_id)  # 404 before the stream starts
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

    async def follow() -> AsyncIterator[str]:
        job, last = first, None
        while True:
            text = JobView.of(job).model_dump_json()
            if text != last:
                last = text
                kind = "end" if job.ended else "progress"
                yield f"event: {kind}\ndata: {text}\n\n"
                if kind == "end":
                    return
            else:
                yield ": keep-alive\n\n"
            if await request.is_disconnected():
                return
            await jobs.wait_for_change(timeout=0.5)  # a job on another replica changes only in the database
            await asyncio.sleep(0.1)  # at most ~10 events a second, however fast the job reports
            job = await jobs.db.run(jobs.get, job_id)

    return StreamingResponse(_Counted(follow(), release), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _Counted:
    """An event stream that gives its slot back however it ends: finished, failed, or never started at all."""

    def __init__(self, stream: AsyncIterator[str], release: Callable[[], None]):
        self.stream, self.release = stream, release

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> str:
        try:
            return await self.stream.__anext__()
        except BaseException:
            self.release()
            raise

    def __del__(self) -> None:
        self.release()
