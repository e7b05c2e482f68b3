"""Jobs as the HTTP layer sees them: submit within quotas, read, follow, cancel, forget. The queue, the state,
progress and history are database rows, so any replica answers for any job, wherever it runs."""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import secrets
from datetime import UTC, datetime
from typing import Any

from model.data import corpus_hash
from model.jobspec import JobSpec

from .. import storage
from ..errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from ..metrics import Metrics
from ..offload import Lane
from ..settings import Settings
from .progress import JobProgress
from .scheduler import JobRunner


def shown_config(spec: JobSpec) -> dict[str, Any]:
    """The job as shown over HTTP: its body, with the dataset as a count and a hash rather than 100,000 sequences."""
    config = spec.to_dict()
    if spec.sequences is not None:
        config["dataset"] = {"sequences": len(spec.sequences), "sha256": corpus_hash(spec.sequences)}
    return config


class JobService:
    def __init__(self, store: storage.Storage, settings: Settings, metrics: Metrics, runner: JobRunner | None):
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.runner = runner  # None when this instance trains nothing (SEQ2SEQ_JOB_WORKERS=0)
        self._changed = asyncio.Condition()
        # Its own threads: with the database away, waiting job calls must not take the shared pool's threads
        # that lease renewals and claims need.
        self.db = Lane("jobs-db", 4, 64, "the jobs database is not answering; try again shortly", retry_after=5)

    async def start(self) -> None:
        await self.db.run(self.update_gauge)

    def close(self) -> None:
        self.db.close()

    # -- reading ---------------------------------------------------------------------------------------
    def get(self, job_id: str) -> storage.JobRow:
        try:
            return self.store.jobs.get(job_id)
        except storage.NotFound:
            raise NotFound(f"job {job_id[:80]!r} does not exist") from None

    def list(self, limit: int = 100) -> builtins.list[storage.JobRow]:
        return self.store.jobs.list(limit)

    async def wait_for_change(self, timeout: float) -> None:
        """Until this process sees a change, or `timeout`: a job on another replica changes only in the database."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    def wake(self) -> None:
        """A job was queued: this process's runner looks now (others look within a second)."""
        if self.runner is not None:
            self.runner.wake()

    def changed(self) -> None:
        """Called from the runner (on the event loop) when a job of this process changes."""
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def update_gauge(self) -> None:
        for status, n in self.store.jobs.counts().items():
            self.metrics.jobs.labels(status).set(n)

    # -- writing ---------------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> storage.JobRow:
        """Queue a job validated once, at the HTTP layer; its body is stored for whichever runner claims it. The
        quotas (queue, job records, trained models) are checked in the transaction that queues it."""
        self._check_size(spec)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        suffix = secrets.token_hex(3)
        job = storage.NewJob(id=f"job-{stamp}-{suffix}", model_id=f"m-{stamp}-{suffix}", config=shown_config(spec),
                     body=spec.to_dict(), max_attempts=spec.max_attempts,
                     progress=JobProgress.queued(spec.training.steps).to_json())
        s = self.settings
        try:  # QueueFull (429) past the queue limit
            created = self.store.jobs.submit(job, s.job_queue, records=s.max_job_records,
                                             trained_models=s.max_trained_models)
        except storage.QuotaFull as exc:
            raise QuotaExceeded(_quota_message(exc, s)) from None
        self.update_gauge()
        return created

    def _check_size(self, spec: JobSpec) -> None:
        """A valid body must not be able to exhaust memory: bound the work of one training step, whose batch is
        the whole corpus when it is small enough for full-batch passes."""
        m, training = spec.model, spec.training
        batch = training.batch_size
        if spec.sequences is not None:
            lengths = len(training.prefix_lengths or range(m.seq_length))
            examples = len({tuple(s) for s in spec.sequences}) * lengths
            if examples <= training.full_batch:  # the model's rule: then every step takes all of them
                batch = max(batch, examples)
        work = batch * m.seq_length * max(m.hidden_dim, m.embedding_dim)
        if work > self.settings.max_job_work:
            raise InvalidInput("training.batch_size", f"a step of {batch} examples x seq_length x hidden_dim is {work}; "
                                                      f"this service allows at most {self.settings.max_job_work}")

    async def cancel(self, job_id: str) -> storage.JobRow:
        """A queued job ends at once; a running one, wherever it runs, within about 2 s."""
        try:
            job = await self.db.run(self.store.jobs.request_cancel, job_id)
        except storage.NotFound:
            raise NotFound(f"job {job_id[:80]!r} does not exist") from None
        deadline = asyncio.get_running_loop().time() + 1.9
        while not job.ended and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            job = await self.db.run(self.store.jobs.get, job_id)
        await self.db.run(self.update_gauge)
        return job

    def delete(self, job_id: str) -> None:
        """Forget a finished job's record; its model, if any, stays in the registry."""
        job = self.get(job_id)
        if not job.ended:
            raise Conflict(f"job {job_id!r} is {job.status}; cancel it first")
        self.store.jobs.delete(job_id)
        self.update_gauge()


def _quota_message(exc: storage.QuotaFull, settings: Settings) -> str:
    if exc.what == "job records":
        return (f"the service keeps at most {settings.max_job_records} job records (SEQ2SEQ_MAX_JOB_RECORDS); "
                "delete finished jobs with DELETE /jobs/{id}")
    return (f"the service keeps at most {settings.max_trained_models} trained models (SEQ2SEQ_MAX_TRAINED_MODELS); "
            f"{exc.count} exist or will, counting queued and running jobs; delete models with DELETE /models/{{id}}")
