"""One claimed job's training process, from start to outcome: its spec file, its protocol lines (progress into the
database every FLUSH_EVERY_S, without holding up the reading), its lease (renewed every lease/4 s from the claim
until the outcome is committed, registration included), a cancel asked for on any replica (seen within
CANCEL_POLL_S), and a watchdog: a process that sends nothing for the progress deadline is killed. A runner that
loses the lease stops the process and writes nothing more. The outcome's write retries transient database errors
(a lock held elsewhere, a failover) while the lease holds, for up to FINISH_RETRY_S; the trained checkpoint stays on
disk until then."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from model import checkpoint
from model.jobspec import parse_job
from model.training import Progress, record_point

from .. import storage
from ..device import Device
from ..metrics import WorkerMetrics
from .launcher import Launcher, TrainingProcess
from .progress import JobProgress
from .protocol import ProtocolError, Result, RunSpec, decode
from .registration import NotRegistered, Registration

log = logging.getLogger("seq2seq.jobs")
CANCEL_GRACE_S = 1.0  # then SIGKILL: a cancel must finish within 2 s
CANCEL_POLL_S = 0.25
FLUSH_EVERY_S = 0.5
FINISH_RETRY_S = 120.0  # how long an outcome's write retries transient database errors (while the lease holds)
RETRY_FIRST_S = 0.25  # then doubling, up to a quarter of the lease
RUNNER_FAILED = "the job's runner failed unexpectedly; see the worker's log"
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """The deadlines and caps a supervisor applies (settings: job_lease_s, job_progress_timeout_s, job_lock_wait_s,
    job_max_handbacks)."""

    lease_s: float = 15.0
    progress_timeout_s: float = 300.0
    lock_wait_s: float | None = None
    max_handbacks: int | None = None


@dataclass
class Live:
    """What a job's process reported so far, and what happened to the job meanwhile."""

    progress: JobProgress | None = None  # None until the first report: the stored progress stands
    history: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False  # a cancel was asked for and the process told to stop
    lost: bool = False  # the lease is gone: write nothing more
    stalled: bool = False  # the watchdog killed the process: it sent nothing for the progress deadline
    child: TrainingProcess | None = None
    last_message: float = field(default_factory=time.monotonic)
    flush: asyncio.Task[None] | None = None  # a progress write in flight

    def report(self, p: Progress) -> None:
        self.progress = JobProgress.of(p)
        if not self.history or self.history[-1]["step"] != p.step:
            record_point(self.history, p.step, p.loss, p.accuracy)

    def outcome(self) -> storage.JobOutcome:
        recorded: storage.JobOutcome = {"history": self.history}
        if self.progress is not None:
            recorded["progress"] = self.progress.to_json()
        return recorded

    def lose(self) -> None:
        """The lease is gone: stop the process, write nothing more."""
        self.lost = True
        if self.child is not None and self.child.running:
            self.child.proc.kill()


class Supervisor:
    def __init__(self, store: storage.Storage, owner: str, limits: Limits, launcher: Launcher, workdir: Path,
                 device: Device, threads: int, registration: Registration, on_change: Callable[[], None],
                 metrics: WorkerMetrics):
        self.store = store
        self.owner = owner
        self.limits = limits
        self.launcher = launcher
        self.workdir = workdir  # private files: spec, checkpoint, the active model's checkpoint
        self.device = device
        self.threads = threads
        self.registration = registration
        self.on_change = on_change
        self.metrics = metrics

    async def run(self, job: storage.JobRow) -> None:
        """Train the job to its outcome. Cancelled (the runner is stopping): the job goes back to the queue."""
        lease = job.lease
        if lease is None or lease.owner != self.owner:
            log.error("job %s: not held by this runner; not run", job.id)
            return
        live = Live()
        renewing = asyncio.get_running_loop().create_task(self._renew(lease, live))
        files: list[Path] = []
        try:
            run, files, compared = await asyncio.to_thread(self._prepare, job)
            child = live.child = await self.launcher.start(files[0])
            live.last_message = time.monotonic()
            watch = asyncio.get_running_loop().create_task(self._watch(lease, child, live))
            stderr_task = asyncio.ensure_future(child.stderr.read())
            result = await self._read(lease, child, live)
            await child.proc.wait()
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            stderr = (await stderr_task)[-2000:]
            code = child.proc.returncode
            if live.lost:
                self.metrics.finished.labels("lost").inc()
                log.warning("job %s: lease lost; its process was stopped and nothing was written", job.id)
            elif live.cancelled:
                await self._end(lease, live, "cancelled", live.outcome())
            elif live.stalled:
                await self._stalled(lease, live)
            elif code != 0 or result is None:
                await self._end(lease, live, "failed", {**live.outcome(), "error": _failure(code, stderr)})
            elif result.status == "succeeded":
                await self._succeed(lease, job, run, result, live, compared)
            else:
                await self._end(lease, live, "cancelled", {**live.outcome(), "history": result.history})
        except asyncio.CancelledError:  # the runner is stopping: hand the job back
            self.metrics.finished.labels("handed_back").inc()
            if live.child is not None:
                await live.child.kill()
            await asyncio.to_thread(self._release, lease)
            raise
        except Exception as exc:
            if storage.transient(exc):  # the database stayed away: the lease expires and the job runs again
                self.metrics.finished.labels("unwritten").inc()
                log.error("job %s: its outcome could not be written (%s); its lease will expire and it will be "
                          "retried", job.id, _short(exc))
            else:  # a bug must not leave the job running forever; its text (SQL included) stays in the log
                log.exception("job %s failed in its runner", job.id)
                await self._end(lease, live, "failed", {**live.outcome(), "error": RUNNER_FAILED})
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            if live.child is not None:  # this task failed, so the process must not live on
                await live.child.kill()
            for path in files:
                path.unlink(missing_ok=True)
                checkpoint.manifest_path(path).unlink(missing_ok=True)

    def _prepare(self, job: storage.JobRow) -> tuple[RunSpec, list[Path], storage.Pointer]:
        """The job's spec file, where its checkpoint goes and, for if_better, the model it is compared with."""
        body = self.store.jobs.body(job.id)
        learning = body.pop("learning", None) if isinstance(body, dict) else None  # a learning cycle's job
        spec = parse_job(body)  # the stored body, read by the same rules as ever
        spec_path, out = self.workdir / f"{job.id}.run.json", self.workdir / f"{job.id}.pt"
        if learning is not None:  # compared with the model the cycle started from, whatever is active now
            compared_id, pointer = learning["control"], self.store.models.active()
            compare_with = self.registration.checkpoint_of(compared_id, self.workdir / f"{job.id}.active.pt")
        else:
            compared_id, compare_with, pointer = self.registration.baseline(spec, self.workdir / f"{job.id}.active.pt")
        files = [spec_path, out] + ([compare_with] if compare_with else [])
        run = RunSpec(spec=spec, out=str(out), device=str(self.device.granted), threads=self.threads,
                      compare_with=str(compare_with) if compare_with else None, compared_id=compared_id,
                      parent_pid=os.getpid(), learning=learning)
        checkpoint.atomic_write(spec_path, run.dumps().encode())
        return run, files, pointer

    async def _read(self, lease: storage.Lease, child: TrainingProcess, live: Live) -> Result | None:
        """The process's protocol lines until it closes stdout; progress reaches the database now and then."""
        result, last_flush = None, 0.0
        async for line in child.stdout:
            try:
                message = decode(line)
            except ProtocolError:  # something else printed to stdout: not ours to interpret
                log.warning("job %s: ignoring output %r", lease.job_id, line[:200])
                continue
            live.last_message = time.monotonic()
            if isinstance(message, Result):
                result = message
                continue
            self.metrics.steps.inc(max(0, message.step - (live.progress.step if live.progress else 0)))
            live.report(message)
            if time.monotonic() - last_flush > FLUSH_EVERY_S and live.progress is not None and live.flush is None:
                last_flush = time.monotonic()
                live.flush = asyncio.get_running_loop().create_task(
                    self._flush(lease, live, live.progress.to_json(), list(live.history)))
        return result

    async def _flush(self, lease: storage.Lease, live: Live, progress: dict[str, Any],
                     history: list[dict[str, Any]]) -> None:
        """One progress write, beside the reading: a database that waits for a lock holds up neither."""
        try:
            if await asyncio.to_thread(self.store.jobs.update_progress, lease, progress, history):
                self.on_change()
            elif not live.lost and not live.stalled:
                live.lose()
        except Exception as exc:  # the database is away: keep training, the lease decides
            log.warning("job %s: progress not written (%s)", lease.job_id, _short(exc))
        finally:
            live.flush = None

    async def _renew(self, lease: storage.Lease, live: Live) -> None:
        """Renew the lease every lease/4 s until the job's outcome is written (the caller cancels this)."""
        while True:
            await asyncio.sleep(self.limits.lease_s / 4)
            try:
                if not await asyncio.to_thread(self.store.jobs.renew, lease, self.limits.lease_s):
                    self.metrics.renewals.labels("lost").inc()
                    live.lose()
                    return
                self.metrics.renewals.labels("renewed").inc()
            except Exception as exc:  # the database is away: the lease decides, keep training meanwhile
                self.metrics.renewals.labels("error").inc()
                log.warning("job %s: lease not renewed (%s)", lease.job_id, _short(exc))

    async def _watch(self, lease: storage.Lease, child: TrainingProcess, live: Live) -> None:
        """Look for a cancel every CANCEL_POLL_S, and kill a process silent for the progress deadline."""
        while child.running:
            await asyncio.sleep(CANCEL_POLL_S)
            if time.monotonic() - live.last_message > self.limits.progress_timeout_s:
                live.stalled = True
                log.warning("job %s: no progress for %g s; stopping its training process", lease.job_id,
                            self.limits.progress_timeout_s)
                child.proc.kill()
                return
            try:
                if not live.cancelled and await asyncio.to_thread(self.store.jobs.cancel_requested, lease.job_id):
                    live.cancelled = True
                    child.proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(child.proc.wait(), CANCEL_GRACE_S)
                    except TimeoutError:
                        child.proc.kill()
            except Exception as exc:  # the database is away: the lease decides, keep training meanwhile
                log.warning("job %s: cannot read its cancel flag (%s)", lease.job_id, _short(exc))

    async def _persist(self, lease: storage.Lease, live: Live, write: Callable[[], T]) -> T:
        """Run a finishing write off the loop, retrying transient database errors while the lease holds, for up
        to FINISH_RETRY_S; the lease keeps being renewed meanwhile."""
        deadline, delay = time.monotonic() + FINISH_RETRY_S, RETRY_FIRST_S
        while True:
            try:
                return await asyncio.to_thread(write)
            except Exception as exc:
                if not storage.transient(exc) or live.lost or time.monotonic() + delay > deadline:
                    raise
                log.warning("job %s: its outcome was not written (%s); trying again in %.2f s", lease.job_id,
                            _short(exc), delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(self.limits.lease_s / 4, RETRY_FIRST_S))

    async def _succeed(self, lease: storage.Lease, job: storage.JobRow, run: RunSpec, result: Result, live: Live,
                       compared: storage.Pointer) -> None:
        progress = (live.progress or JobProgress.queued(run.spec.training.steps)).finished(result.metrics)
        outcome: storage.JobOutcome = {"progress": progress.to_json(), "history": result.history}
        try:
            await self.registration.register(lease, job.model_id, run, result, outcome, compared,
                                             lambda write: self._persist(lease, live, write))
            self.metrics.finished.labels("succeeded").inc()
        except storage.LeaseLost:
            self.metrics.finished.labels("lost").inc()
            log.warning("job %s: lease lost before its model was registered; nothing was written", job.id)
        except NotRegistered as exc:
            await self._end(lease, live, "failed", {
                **live.outcome(), "error": f"the trained checkpoint was not registered: {exc}"[:500]})

    async def _stalled(self, lease: storage.Lease, live: Live) -> None:
        error = (f"the training process sent no progress for {self.limits.progress_timeout_s:g} s "
                 "(SEQ2SEQ_JOB_PROGRESS_TIMEOUT_S) and was stopped")
        status = await self._persist(lease, live, lambda: self.store.jobs.retry_or_fail(
            lease, error, live.outcome(), lock_wait_s=self.limits.lock_wait_s))
        self.metrics.finished.labels("stalled").inc()
        log.warning("job %s: %s; it is now %s", lease.job_id, error, status or "not this runner's")

    async def _end(self, lease: storage.Lease, live: Live, status: str, outcome: storage.JobOutcome) -> None:
        try:
            if not await self._persist(lease, live, lambda: self.store.jobs.finish(
                    lease, status, outcome, lock_wait_s=self.limits.lock_wait_s)):
                self.metrics.finished.labels("lost").inc()
                log.warning("job %s: lease lost; its %s outcome was not written", lease.job_id, status)
            else:
                self.metrics.finished.labels(status).inc()
        except Exception as exc:  # the lease will expire and another runner will requeue it
            self.metrics.finished.labels("unwritten").inc()
            log.error("job %s: its %s outcome could not be written (%s)", lease.job_id, status, _short(exc))
        error = outcome.get("error")
        log.info("job %s %s%s", lease.job_id, status, f": {error}" if error else "")

    def _release(self, lease: storage.Lease) -> None:
        try:
            status = self.store.jobs.release(lease, self.limits.max_handbacks)
        except Exception:
            log.exception("job %s could not be handed back; its lease will expire", lease.job_id)
            return
        if status == "failed":
            log.warning("job %s handed back more than %s times: failed", lease.job_id, self.limits.max_handbacks)


def _short(exc: BaseException) -> str:
    """An error for the log in one line: a database error's driver message, without the statement."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"{type(orig or exc).__name__}: {text[0][:200] if text else ''}"


def _failure(code: int | None, stderr: bytes) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = " (the kernel kills a process that runs out of memory this way)" if code == -signal.SIGKILL else ""
        return f"the training process was killed by {name}{why}"
    lines = [line for line in stderr.decode(errors="replace").strip().splitlines() if line.strip()]
    if code == 0:
        return "the training process ended without a result"
    return f"the training process exited with status {code}" + (f": {lines[-1][:300]}" if lines else "")
