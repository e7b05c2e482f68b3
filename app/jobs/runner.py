"""Runs training jobs from the shared queue: claim, train in a child process, heartbeat, finish.

The same runner serves a serving instance (`SEQ2SEQ_JOB_WORKERS` > 0) and a dedicated worker
(`python -m app.worker`): it needs the database and a device, not the HTTP app. A claimed job carries a
lease this runner renews every few seconds; a runner that loses its lease (it stalled, the network split,
another runner requeued the job) stops the process and writes nothing more. A cancel asked for on any
replica is seen here within CANCEL_POLL_S. Every runner also requeues jobs whose lease expired, so a worker
that died (its machine included) costs the job an attempt, not the job.

Each job trains in its own process (`app.jobs.process`) with its own thread budget and the lowest CPU
priority, so serving stays fast. The checkpoint it writes is read back, verified and registered in the same
transaction that ends the job and, by the job's policy, activates it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from model import checkpoint
from model.training import record_point

from .. import storage
from ..device import Device
from ..registry import info_of
from . import policy
from .protocol import Progress, ProtocolError, Result, RunSpec, decode

log = logging.getLogger("seq2seq.jobs")
CANCEL_GRACE_S = 1.0  # then SIGKILL: a cancel must finish within 2 s
CANCEL_POLL_S = 0.25
FLUSH_EVERY_S = 0.5


class JobRunner:
    def __init__(self, store: storage.Storage, device: Device, *, slots: int, lease_s: float, threads: int = 1,
                 default_model: str = "default", standby: bool = False, on_activated: Callable[[str, int], None] | None = None,
                 on_change: Callable[[], None] | None = None):
        self.store = store
        self.device = device
        self.slots = slots
        self.lease_s = lease_s
        self.threads = threads
        self.standby = standby
        self.default_model = default_model  # active while the pointer names none
        self.on_activated = on_activated  # this process serves models too: swap at once, not at the next poll
        self.on_change = on_change or (lambda: None)
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self._running: dict[str, asyncio.Task] = {}
        self._spare: asyncio.subprocess.Process | None = None
        self._spare_task: asyncio.Task | None = None
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="seq2seq-runs-"))

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._loop_task = asyncio.get_running_loop().create_task(self._schedule(), name="job-runner")
        self._replenish()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    @property
    def busy(self) -> int:
        return len(self._running)

    async def stop(self) -> None:
        """Hand running jobs back to the queue (their attempt is not counted) and stop their processes."""
        self._stopping = True
        self.wake()
        if self._loop_task is not None:  # let it finish what it does: a claim in flight becomes a running job
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        if self._spare_task is not None:
            await asyncio.gather(self._spare_task, return_exceptions=True)
        if self._spare is not None and self._spare.returncode is None:
            self._spare.kill()
            await self._spare.wait()
        for path in self._tmp.iterdir():
            path.unlink(missing_ok=True)
        self._tmp.rmdir()

    async def _schedule(self) -> None:
        next_sweep = 0.0
        while not self._stopping:
            try:
                if time.monotonic() >= next_sweep:  # anyone's expired leases, this runner's included
                    next_sweep = time.monotonic() + max(self.lease_s / 4, 0.5)
                    swept = await asyncio.to_thread(self.store.jobs.requeue_expired)
                    if any(swept.values()):
                        log.warning("expired leases: %s", swept)
                        self.on_change()
                while len(self._running) < self.slots and not self._stopping:
                    job = await asyncio.to_thread(self.store.jobs.claim, self.owner, self.host, os.getpid(), self.lease_s)
                    if job is None:
                        break
                    self._running[job["id"]] = asyncio.get_running_loop().create_task(self._run(job), name=job["id"])
                    self.on_change()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: keep what runs, try again shortly
                log.warning("job runner cannot reach the database (%s); retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(1.0, self.lease_s / 4))
            self._wake.clear()

    # -- the training process --------------------------------------------------------------------------
    async def _spawn(self, *args: str) -> asyncio.subprocess.Process:
        # No preexec_fn, so the child is spawned rather than forked: forking a big process would stall the loop.
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.jobs.process", *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)

    def _replenish(self) -> None:
        """Keep one warmed-up process waiting, so the next job starts without importing torch first."""
        if self.standby and not self._stopping and self._spare is None and self._spare_task is None:
            self._spare_task = asyncio.get_running_loop().create_task(self._start_spare())

    async def _start_spare(self) -> None:
        try:
            self._spare = await self._spawn("--standby", str(os.getpid()))
        finally:
            self._spare_task = None

    async def _take_spare(self) -> asyncio.subprocess.Process | None:
        if self._spare_task is not None:
            await asyncio.shield(self._spare_task)
        spare, self._spare = self._spare, None
        return spare if spare is not None and spare.returncode is None else None

    async def _start_process(self, spec_path: Path) -> asyncio.subprocess.Process:
        proc = await self._take_spare()
        if proc is not None:
            proc.stdin.write(f"{spec_path}\n".encode())
            await proc.stdin.drain()
            proc.stdin.close()
            return proc
        return await self._spawn(str(spec_path))

    # -- one job ---------------------------------------------------------------------------------------
    async def _run(self, job: dict) -> None:
        job_id = job["id"]
        live = {"progress": job["progress"], "history": [], "cancel": False, "lost": False}
        proc: asyncio.subprocess.Process | None = None
        files: list[Path] = []
        try:
            spec, files = await asyncio.to_thread(self._prepare, job)
            proc = await self._start_process(files[0])
            watch = asyncio.get_running_loop().create_task(self._watch(job_id, proc, live))
            stderr_task = asyncio.ensure_future(proc.stderr.read())
            result = await self._read(job_id, proc, live)
            await proc.wait()
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            stderr = (await stderr_task)[-2000:]
            if live["lost"]:
                log.warning("job %s: lease lost; its process was stopped and nothing was written", job_id)
            elif live["cancel"]:
                await self._end(job_id, "cancelled", live, {"history": live["history"]})
            elif proc.returncode != 0 or result is None:
                await self._end(job_id, "failed", live, {"error": _failure(proc.returncode, stderr)})
            elif result.status == "succeeded":
                await self._succeed(job, spec, result, live)
            else:
                await self._end(job_id, "cancelled", live, {"history": result.history})
        except asyncio.CancelledError:  # this runner is stopping: hand the job back untouched
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            await asyncio.to_thread(self._release, job_id)
            raise
        except Exception as exc:  # a bug or a failing database must not leave the job running forever
            log.exception("job %s failed in its runner", job_id)
            await self._end(job_id, "failed", live, {"error": f"{type(exc).__name__}: {exc}"[:500]})
        finally:
            if proc is not None and proc.returncode is None:  # this task failed, so the process must not live on
                proc.kill()
                await proc.wait()
            for path in files:
                path.unlink(missing_ok=True)
                checkpoint.manifest_path(path).unlink(missing_ok=True)
            self._running.pop(job_id, None)
            self._replenish()  # after the job, not beside it: warming a spare up costs a core for seconds
            self.on_change()
            self.wake()

    def _prepare(self, job: dict) -> tuple[RunSpec, list[Path]]:
        """The spec file, the output path and the active model's checkpoint (for if_better) in private files."""
        body = self.store.jobs.body(job["id"])
        spec_path = self._tmp / f"{job['id']}.run.json"
        out = self._tmp / f"{job['id']}.pt"
        files = [spec_path, out]
        compared_id, compare_with = self.store.models.active()[0] or self.default_model, None
        if body.get("activate", "if_better") == "if_better":
            try:
                blob = self.store.models.checkpoint_bytes(compared_id)
                compare_with = self._tmp / f"{job['id']}.active.pt"
                compare_with.write_bytes(blob)
                checkpoint.manifest_path(compare_with).write_text(f"{storage.sha256_of(blob)}  {compare_with.name}\n")
                files.append(compare_with)
            except storage.NotFound:  # no model to compare with: nothing is active
                compared_id = None
            except storage.StorageError:  # there is one but it cannot be read: the gate says so, and refuses
                compare_with = None
        spec = RunSpec(body=body, out=str(out), device=str(self.device.granted), threads=self.threads,
                       name=body.get("name"), compare_with=str(compare_with) if compare_with else None,
                       compared_id=compared_id, parent_pid=os.getpid())
        checkpoint.atomic_write(spec_path, spec.dumps().encode())
        return spec, files

    async def _read(self, job_id: str, proc: asyncio.subprocess.Process, live: dict) -> Result | None:
        result, last_flush = None, 0.0
        async for line in proc.stdout:
            try:
                message = decode(line)
            except ProtocolError:  # something else printed to stdout: not ours to interpret
                log.warning("job %s: ignoring output %r", job_id, line[:200])
                continue
            if isinstance(message, Progress):
                _on_progress(live, message)
                if time.monotonic() - last_flush > FLUSH_EVERY_S:
                    last_flush = time.monotonic()
                    try:
                        held = await asyncio.to_thread(self.store.jobs.update_progress, job_id, self.owner,
                                                       dict(live["progress"]), list(live["history"]))
                    except Exception as exc:  # the database is away: keep training, the lease decides
                        log.warning("job %s: progress not written (%s)", job_id, exc)
                        continue
                    if not held:
                        live["lost"] = True
                        proc.kill()
                    self.on_change()
            else:
                result = message
        return result

    async def _watch(self, job_id: str, proc: asyncio.subprocess.Process, live: dict) -> None:
        """Renew the lease every lease/4 s, and look for a cancel (asked on any replica) every CANCEL_POLL_S."""
        next_renew = time.monotonic() + self.lease_s / 4
        while proc.returncode is None:
            await asyncio.sleep(CANCEL_POLL_S)
            try:
                if time.monotonic() >= next_renew:
                    next_renew = time.monotonic() + self.lease_s / 4
                    if not await asyncio.to_thread(self.store.jobs.renew, job_id, self.owner, self.lease_s):
                        live["lost"] = True
                        proc.kill()
                        return
                if not live["cancel"] and await asyncio.to_thread(self.store.jobs.cancel_requested, job_id):
                    live["cancel"] = True
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await asyncio.wait_for(proc.wait(), CANCEL_GRACE_S)
                    except TimeoutError:
                        proc.kill()
            except (storage.StorageError, OSError) as exc:
                log.warning("job %s: %s", job_id, exc)
            except Exception as exc:  # the database is away: the lease decides, keep training meanwhile
                log.warning("job %s: cannot reach the database (%s)", job_id, exc)

    async def _succeed(self, job: dict, spec: RunSpec, result: Result, live: dict) -> None:
        job_id, model_id = job["id"], job["model_id"]
        activate, reason = policy.decide(spec.body.get("activate", "if_better"), result.gate, spec.compared_id)
        metrics = result.metrics
        progress = {**live["progress"], "step": metrics["steps"], "fraction": metrics["steps"] / live["progress"]["total_steps"],
                    "loss": metrics["loss"], "accuracy": metrics["accuracy"], "eta_seconds": 0.0}
        fields = {"progress": progress, "history": result.history, "activation_reason": reason}
        try:
            version = await asyncio.to_thread(self._register, job_id, model_id, Path(spec.out), activate, fields)
        except storage.LeaseLost:
            log.warning("job %s: lease lost before its model was registered; nothing was written", job_id)
            return
        except (storage.IntegrityFailure, storage.Conflict, checkpoint.CheckpointError) as exc:
            reason = exc.reason if isinstance(exc, checkpoint.CheckpointError) else str(exc)  # never a path
            await self._end(job_id, "failed", live, {"error": f"the trained checkpoint was not registered: {reason}"[:500]})
            return
        if version is not None and self.on_activated is not None:  # loading a model: off the event loop
            await asyncio.to_thread(self.on_activated, model_id, version)
        log.info("job %s succeeded: model %s (%s)", job_id, model_id, reason)

    def _register(self, job_id: str, model_id: str, out: Path, activate: bool, fields: dict) -> int | None:
        ckpt = checkpoint.load(out)
        blob = out.read_bytes()
        return self.store.jobs.finish_with_model(job_id, self.owner, model_id=model_id, checkpoint=blob,
                                                 sha256=storage.sha256_of(blob), created_at=ckpt.created_at,
                                                 info=info_of(ckpt), activate=activate, fields=fields)

    async def _end(self, job_id: str, status: str, live: dict, fields: dict) -> None:
        fields = {"progress": live["progress"], "history": live["history"], **fields}
        try:
            if not await asyncio.to_thread(self.store.jobs.finish, job_id, self.owner, status, fields):
                log.warning("job %s: lease lost; its %s outcome was not written", job_id, status)
        except Exception:  # the lease will expire and another runner will requeue it
            log.exception("job %s: its %s outcome could not be written", job_id, status)
        log.info("job %s %s%s", job_id, status, f": {fields['error']}" if fields.get("error") else "")

    def _release(self, job_id: str) -> None:
        try:
            self.store.jobs.release(job_id, self.owner)
        except Exception:
            log.exception("job %s could not be handed back; its lease will expire", job_id)


def _on_progress(live: dict, m: Progress) -> None:
    live["progress"] = {"step": m.step, "total_steps": m.total_steps, "fraction": m.step / m.total_steps,
                        "loss": m.loss, "accuracy": m.accuracy, "eta_seconds": m.eta_seconds}
    if not live["history"] or live["history"][-1]["step"] != m.step:
        record_point(live["history"], m.step, m.loss, m.accuracy)


def _failure(code: int | None, stderr: bytes) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = " (the kernel kills a process that runs out of memory this way)" if code == -signal.SIGKILL else ""
        return f"the training process was killed by {name}{why}"
    lines = [line for line in stderr.decode(errors="replace").strip().splitlines() if line.strip()]
    if code == 0:
        return "the training process ended without a result"
    return f"the training process exited with status {code}" + (f": {lines[-1][:300]}" if lines else "")
