"""One claimed job's training process, from start to outcome: its spec file, its protocol lines (progress into the
database every FLUSH_EVERY_S), its lease (renewed every lease/4 s) and a cancel asked for on any replica (seen
within CANCEL_POLL_S). A runner that loses the lease stops the process and writes nothing more."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model import checkpoint
from model.jobspec import parse_job
from model.training import Progress, record_point

from .. import storage
from ..device import Device
from .launcher import Launcher, TrainingProcess
from .progress import JobProgress
from .protocol import ProtocolError, Result, RunSpec, decode
from .registration import NotRegistered, Registration

log = logging.getLogger("seq2seq.jobs")
CANCEL_GRACE_S = 1.0  # then SIGKILL: a cancel must finish within 2 s
CANCEL_POLL_S = 0.25
FLUSH_EVERY_S = 0.5


@dataclass
class Live:
    """What a job's process reported so far, and what happened to the job meanwhile."""

    progress: JobProgress | None = None  # None until the first report: the stored progress stands
    history: list[dict[str, Any]] = field(default_factory=list)
    cancelled: bool = False  # a cancel was asked for and the process told to stop
    lost: bool = False  # the lease is gone: write nothing more

    def report(self, p: Progress) -> None:
        self.progress = JobProgress.of(p)
        if not self.history or self.history[-1]["step"] != p.step:
            record_point(self.history, p.step, p.loss, p.accuracy)

    def outcome(self) -> storage.JobOutcome:
        recorded: storage.JobOutcome = {"history": self.history}
        if self.progress is not None:
            recorded["progress"] = self.progress.to_json()
        return recorded


class Supervisor:
    def __init__(self, store: storage.Storage, owner: str, lease_s: float, launcher: Launcher, workdir: Path,
                 device: Device, threads: int, registration: Registration, on_change: Callable[[], None]):
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self.launcher = launcher
        self.workdir = workdir  # private files: spec, checkpoint, the active model's checkpoint
        self.device = device
        self.threads = threads
        self.registration = registration
        self.on_change = on_change

    async def run(self, job: storage.JobRow) -> None:
        """Train the job to its outcome. Cancelled (the runner is stopping): the job goes back to the queue."""
        live = Live()
        child: TrainingProcess | None = None
        files: list[Path] = []
        try:
            run, files = await asyncio.to_thread(self._prepare, job)
            child = await self.launcher.start(files[0])
            watch = asyncio.get_running_loop().create_task(self._watch(job.id, child, live))
            stderr_task = asyncio.ensure_future(child.stderr.read())
            result = await self._read(job.id, child, live)
            await child.proc.wait()
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            stderr = (await stderr_task)[-2000:]
            code = child.proc.returncode
            if live.lost:
                log.warning("job %s: lease lost; its process was stopped and nothing was written", job.id)
            elif live.cancelled:
                await self._end(job.id, "cancelled", live.outcome())
            elif code != 0 or result is None:
                await self._end(job.id, "failed", {**live.outcome(), "error": _failure(code, stderr)})
            elif result.status == "succeeded":
                await self._succeed(job, run, result, live)
            else:
                await self._end(job.id, "cancelled", {**live.outcome(), "history": result.history})
        except asyncio.CancelledError:  # the runner is stopping: hand the job back untouched
            if child is not None:
                await child.kill()
            await asyncio.to_thread(self._release, job.id)
            raise
        except Exception as exc:  # a bug or a failing database must not leave the job running forever
            log.exception("job %s failed in its runner", job.id)
            await self._end(job.id, "failed", {**live.outcome(), "error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            if child is not None:  # this task failed, so the process must not live on
                await child.kill()
            for path in files:
                path.unlink(missing_ok=True)
                checkpoint.manifest_path(path).unlink(missing_ok=True)

    def _prepare(self, job: storage.JobRow) -> tuple[RunSpec, list[Path]]:
        """The job's spec file, where its checkpoint goes and, for if_better, the model it is compared with."""
        spec = parse_job(self.store.jobs.body(job.id))  # the stored body, read by the same rules as ever
        spec_path, out = self.workdir / f"{job.id}.run.json", self.workdir / f"{job.id}.pt"
        compared_id, compare_with = self.registration.baseline(spec, self.workdir / f"{job.id}.active.pt")
        files = [spec_path, out] + ([compare_with] if compare_with else [])
        run = RunSpec(spec=spec, out=str(out), device=str(self.device.granted), threads=self.threads,
                      compare_with=str(compare_with) if compare_with else None, compared_id=compared_id,
                      parent_pid=os.getpid())
        checkpoint.atomic_write(spec_path, run.dumps().encode())
        return run, files

    async def _read(self, job_id: str, child: TrainingProcess, live: Live) -> Result | None:
        """The process's protocol lines until it closes stdout; progress reaches the database now and then."""
        result, last_flush = None, 0.0
        async for line in child.stdout:
            try:
                message = decode(line)
            except ProtocolError:  # something else printed to stdout: not ours to interpret
                log.warning("job %s: ignoring output %r", job_id, line[:200])
                continue
            if isinstance(message, Result):
                result = message
                continue
            live.report(message)
            if time.monotonic() - last_flush > FLUSH_EVERY_S and live.progress is not None:
                last_flush = time.monotonic()
                try:
                    held = await asyncio.to_thread(self.store.jobs.update_progress, job_id, self.owner,
                                                   live.progress.to_json(), list(live.history))
                except Exception as exc:  # the database is away: keep training, the lease decides
                    log.warning("job %s: progress not written (%s)", job_id, exc)
                    continue
                if not held:
                    live.lost = True
                    child.proc.kill()
                self.on_change()
        return result

    async def _watch(self, job_id: str, child: TrainingProcess, live: Live) -> None:
        """Renew the lease every lease/4 s, and look for a cancel every CANCEL_POLL_S."""
        next_renew = time.monotonic() + self.lease_s / 4
        while child.running:
            await asyncio.sleep(CANCEL_POLL_S)
            try:
                if time.monotonic() >= next_renew:
                    next_renew = time.monotonic() + self.lease_s / 4
                    if not await asyncio.to_thread(self.store.jobs.renew, job_id, self.owner, self.lease_s):
                        live.lost = True
                        child.proc.kill()
                        return
                if not live.cancelled and await asyncio.to_thread(self.store.jobs.cancel_requested, job_id):
                    live.cancelled = True
                    child.proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(child.proc.wait(), CANCEL_GRACE_S)
                    except TimeoutError:
                        child.proc.kill()
            except (storage.StorageError, OSError) as exc:
                log.warning("job %s: %s", job_id, exc)
            except Exception as exc:  # the database is away: the lease decides, keep training meanwhile
                log.warning("job %s: cannot reach the database (%s)", job_id, exc)

    async def _succeed(self, job: storage.JobRow, run: RunSpec, result: Result, live: Live) -> None:
        progress = (live.progress or JobProgress.queued(run.spec.training.steps)).finished(result.metrics)
        try:
            await self.registration.register(job, run, result, {"progress": progress.to_json(),
                                                                "history": result.history})
        except storage.LeaseLost:
            log.warning("job %s: lease lost before its model was registered; nothing was written", job.id)
        except NotRegistered as exc:
            await self._end(job.id, "failed", {**live.outcome(),
                                               "error": f"the trained checkpoint was not registered: {exc}"[:500]})

    async def _end(self, job_id: str, status: str, outcome: storage.JobOutcome) -> None:
        try:
            if not await asyncio.to_thread(self.store.jobs.finish, job_id, self.owner, status, outcome):
                log.warning("job %s: lease lost; its %s outcome was not written", job_id, status)
        except Exception:  # the lease will expire and another runner will requeue it
            log.exception("job %s: its %s outcome could not be written", job_id, status)
        error = outcome.get("error")
        log.info("job %s %s%s", job_id, status, f": {error}" if error else "")

    def _release(self, job_id: str) -> None:
        try:
            self.store.jobs.release(job_id, self.owner)
        except Exception:
            log.exception("job %s could not be handed back; its lease will expire", job_id)


def _failure(code: int | None, stderr: bytes) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = " (the kernel kills a process that runs out of memory this way)" if code == -signal.SIGKILL else ""
        return f"the training process was killed by {name}{why}"
    lines = [line for line in stderr.decode(errors="replace").strip().splitlines() if line.strip()]
    if code == 0:
        return "the training process ended without a result"
    return f"the training process exited with status {code}" + (f": {lines[-1][:300]}" if lines else "")
