"""Background training jobs: a bounded queue, worker processes, live progress, cancel, persistence, activation.

Jobs live in SQLite; the job body lives in DATA_DIR/jobs/ID.json so a queued job survives a restart. Each
job trains in its own process (`app.training_worker`) with its own thread budget and a lower priority, so
serving stays fast. A checkpoint is written atomically, verified by loading it and only then registered;
files in the models directory that no registry row names are removed at start.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from model import checkpoint
from model.data import corpus_hash
from model.training import record_point

from .db import Database
from .errors import ApiError, InputError
from .job_schemas import JobRequest
from .metrics import Metrics
from .registry import Registry, RegistryError
from .settings import Settings

log = logging.getLogger("seq2seq.jobs")
TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ("queued", "running") + TERMINAL
CANCEL_GRACE_S = 1.2  # then SIGKILL: a cancel must finish within 2 s
FLUSH_EVERY_S = 1.0


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def summarize(body: dict) -> dict:
    """The job's config as shown over HTTP: the dataset as a count and a hash, not 100,000 sequences."""
    config = json.loads(json.dumps(body))
    seqs = config["dataset"].get("sequences")
    if seqs is not None:
        config["dataset"] = {"sequences": len(seqs), "sha256": corpus_hash(seqs)}
    return config


class JobManager:
    def __init__(self, db: Database, registry: Registry, settings: Settings, metrics: Metrics):
        self.db = db
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.jobs_dir = settings.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._live: dict[str, dict] = {}  # progress and history of running jobs, ahead of the database
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._cancelled: set[str] = set()
        self._spare: asyncio.subprocess.Process | None = None
        self._spare_task: asyncio.Task | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._changed: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._scheduler: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET status='failed', error='interrupted', finished_at=? WHERE status='running'",
                         (now(),))
        self._remove_orphans()
        self._update_gauge()
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule(), name="job-scheduler")
        self._wake.set()
        self._replenish()

    async def stop(self) -> None:
        self._stopping = True
        if self._scheduler:
            self._scheduler.cancel()
        if self._spare_task is not None:
            await asyncio.gather(self._spare_task, return_exceptions=True)
        if self._spare is not None and self._spare.returncode is None:
            self._spare.kill()
            await self._spare.wait()
        for proc in list(self._procs.values()):
            if proc is not None and proc.returncode is None:  # None: a slot claimed, its process not started
                proc.kill()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET status='failed', error='interrupted', finished_at=? WHERE status='running'",
                         (now(),))

    def _remove_orphans(self) -> None:
        queued = {r["id"] for r in self.db.query("SELECT id FROM jobs WHERE status='queued'")}
        for path in self.jobs_dir.iterdir():  # a body is kept only while its job waits to run
            if path.name.split(".", 1)[0] not in queued:
                path.unlink(missing_ok=True)
        known = {Path(r["path"]).name for r in self.db.query("SELECT path FROM models")}
        for path in self.registry.models_dir.iterdir():
            base = path.name.removesuffix(".sha256")
            if base not in known:
                log.warning("removing %s: no registered model owns it", path.name)
                path.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------------------
    def _to_dict(self, row) -> dict:
        progress, history = json.loads(row["progress"]), json.loads(row["history"])
        live = self._live.get(row["id"])
        if live is not None:
            progress, history = live["progress"], live["history"]
        config = json.loads(row["config"])
        return {"id": row["id"], "name": config.get("name"), "status": row["status"], "progress": progress,
                "history": history, "created_at": row["created_at"], "started_at": row["started_at"],
                "finished_at": row["finished_at"], "error": row["error"], "model_id": row["model_id"],
                "activated": bool(row["activated"]), "activation_reason": row["activation_reason"], "config": config}

    def get(self, job_id: str) -> dict:
        rows = self.db.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise ApiError(404, f"job {job_id!r} does not exist")
        return self._to_dict(rows[0])

    def list(self, limit: int = 100) -> list[dict]:
        return [self._to_dict(r) for r in self.db.query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))]

    async def wait_for_change(self, timeout: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _update_gauge(self) -> None:
        counts = {s: 0 for s in STATUSES}
        for row in self.db.query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status"):
            counts[row["status"]] = row["n"]
        for status, n in counts.items():
            self.metrics.jobs.labels(status).set(n)

    # -- submitting and cancelling -----------------------------------------------------------------------
    def submit(self, request: JobRequest) -> dict:
        self._check_size(request)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        suffix = secrets.token_hex(3)
        job_id, model_id = f"job-{stamp}-{suffix}", f"m-{stamp}-{suffix}"
        body = request.model_dump()
        body_path = self.jobs_dir / f"{job_id}.json"
        checkpoint.atomic_write(body_path, json.dumps(body).encode())
        total = body["training"]["steps"]
        progress = {"step": 0, "total_steps": total, "fraction": 0.0, "loss": None, "accuracy": None, "eta_seconds": None}
        try:
            with self.db.transaction() as conn:  # counted and inserted under one write lock: limits hold under races
                self._check_quotas(conn)
                seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
                conn.execute("INSERT INTO jobs(id, seq, status, config, progress, history, created_at, model_id) "
                             "VALUES(?, ?, 'queued', ?, ?, '[]', ?, ?)",
                             (job_id, seq, json.dumps(summarize(body)), json.dumps(progress), now(), model_id))
        except BaseException:
            body_path.unlink(missing_ok=True)
            raise
        self._update_gauge()
        self._wake.set()
        return self.get(job_id)

    def _check_size(self, request: JobRequest) -> None:
        """A valid body must not be able to exhaust memory: bound the work of one training step."""
        m, t = request.model, request.training
        work = t.batch_size * m.seq_length * max(m.hidden_dim, m.embedding_dim)
        if work > self.settings.max_job_work:
            raise InputError("training.batch_size", f"batch_size x seq_length x hidden_dim is {work}; this service "
                                                    f"allows at most {self.settings.max_job_work}")

    def _check_quotas(self, conn) -> None:
        s = self.settings
        counts = dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        queued, pending = counts.get("queued", 0), counts.get("queued", 0) + counts.get("running", 0)
        if queued >= s.job_queue:
            raise ApiError(429, f"the job queue is full ({queued} jobs waiting, limit {s.job_queue}); "
                                "try again when one has started", headers={"Retry-After": "10"})
        if sum(counts.values()) >= s.max_job_records:
            raise ApiError(409, f"the service keeps at most {s.max_job_records} job records "
                                "(SEQ2SEQ_MAX_JOB_RECORDS); delete finished jobs with DELETE /jobs/{id}")
        trained = conn.execute("SELECT COUNT(*) FROM models WHERE source='trained'").fetchone()[0]
        if trained + pending >= s.max_trained_models:
            raise ApiError(409, f"the service keeps at most {s.max_trained_models} trained models "
                                f"(SEQ2SEQ_MAX_TRAINED_MODELS); {trained} exist and {pending} jobs will add more; "
                                "delete models with DELETE /models/{id}")

    def delete(self, job_id: str) -> None:
        """Forget a finished job's record; its model, if any, stays in the registry."""
        job = self.get(job_id)
        if job["status"] not in TERMINAL:
            raise ApiError(409, f"job {job_id!r} is {job['status']}; cancel it first")
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM jobs WHERE id = ? AND status IN ('succeeded', 'failed', 'cancelled')", (job_id,))
        self._update_gauge()

    async def cancel(self, job_id: str) -> dict:
        job = self.get(job_id)
        if job["status"] in TERMINAL:
            raise ApiError(409, f"job {job_id!r} has already ended ({job['status']})")
        if job["status"] == "queued":
            with self.db.transaction() as conn:
                updated = conn.execute("UPDATE jobs SET status='cancelled', finished_at=? WHERE id=? AND status='queued'",
                                       (now(), job_id)).rowcount
            if updated:
                (self.jobs_dir / f"{job_id}.json").unlink(missing_ok=True)
                self._update_gauge()
                await self._notify()
                return self.get(job_id)
        self._cancelled.add(job_id)  # seen by _run even if its process has not started yet
        proc = self._procs.get(job_id)
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), CANCEL_GRACE_S)
            except asyncio.TimeoutError:
                proc.kill()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and self.get(job_id)["status"] not in TERMINAL:
            await asyncio.sleep(0.02)
        return self.get(job_id)

    # -- running -----------------------------------------------------------------------------------------
    async def _spawn(self, *args: str) -> asyncio.subprocess.Process:
        # No preexec_fn, so the child is spawned rather than forked: forking this big process would stall the loop.
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.training_worker", *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)

    def _replenish(self) -> None:
        """Keep one warmed-up worker waiting, so the next job starts without importing torch first."""
        if self.settings.job_standby and not self._stopping and self._spare is None and self._spare_task is None:
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
        if spare is not None and spare.returncode is None:
            return spare
        return None

    async def _schedule(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._procs) < self.settings.job_workers:
                rows = self.db.query("SELECT id FROM jobs WHERE status='queued' ORDER BY seq LIMIT 1")
                if not rows:
                    break
                job_id = rows[0]["id"]
                if not await asyncio.to_thread(self._claim, job_id):
                    continue
                self._procs[job_id] = None  # type: ignore[assignment]  # holds the slot until the process exists
                task = asyncio.get_running_loop().create_task(self._run(job_id), name=f"job {job_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._update_gauge()

    def _claim(self, job_id: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("UPDATE jobs SET status='running', started_at=? WHERE id=? AND status='queued'",
                                (now(), job_id)).rowcount == 1

    async def _run(self, job_id: str) -> None:
        row = self.db.query("SELECT * FROM jobs WHERE id = ?", (job_id,))[0]
        live = self._live[job_id] = {"progress": json.loads(row["progress"]), "history": []}
        await self._notify()
        model_id = row["model_id"]
        out = self.registry.models_dir / f"{model_id}.pt"
        outcome: dict = {"status": "failed", "error": "the training process ended without a result"}
        stderr_tail = b""
        spec: dict = {}
        try:
            body = json.loads((self.jobs_dir / f"{job_id}.json").read_text())
            active = self.registry.active
            compare_with = None
            if active is not None:
                compare_with = self.db.query("SELECT path FROM models WHERE id=?", (active.id,))[0]["path"]
            spec = {"body": body, "out": str(out), "compare_with": compare_with, "compared_id": active.id if active else None,
                    "threads": self.settings.job_threads, "name": body.get("name"), "device": str(self.registry.device),
                    "parent_pid": os.getpid()}
            spec_path = self.jobs_dir / f"{job_id}.run.json"
            checkpoint.atomic_write(spec_path, json.dumps(spec).encode())
            proc = await self._take_spare()
            if proc is not None:
                proc.stdin.write(f"{spec_path}\n".encode())
                await proc.stdin.drain()
                proc.stdin.close()
            else:
                proc = await self._spawn(str(spec_path))
            self._procs[job_id] = proc
            if job_id in self._cancelled:
                proc.send_signal(signal.SIGTERM)
            stderr_task = asyncio.ensure_future(proc.stderr.read())
            last_flush = 0.0
            async for line in proc.stdout:
                try:
                    message = json.loads(line)
                except ValueError:  # something else printed to stdout: not ours to interpret
                    log.warning("job %s: ignoring output %r", job_id, line[:200])
                    continue
                if message["type"] == "progress":
                    self._on_progress(live, message)
                    if time.monotonic() - last_flush > FLUSH_EVERY_S:  # off the event loop: a commit fsyncs
                        last_flush = time.monotonic()
                        await asyncio.to_thread(self._flush, job_id, dict(live["progress"]), list(live["history"]))
                    await self._notify()
                elif message["type"] == "result":
                    outcome = message
            await proc.wait()
            stderr_tail = (await stderr_task)[-2000:]
            if job_id in self._cancelled:  # cancelled means asked for; anything else that kills it is a failure
                outcome = {"status": "cancelled", "history": live["history"]}
            elif proc.returncode != 0:
                outcome = {"status": "failed", "error": self._failure(proc.returncode, stderr_tail)}
        except asyncio.CancelledError:
            outcome = {"status": "failed", "error": "interrupted"}
            raise
        except Exception as exc:  # a bug here must not lose the job: record it
            log.exception("job %s failed", job_id)
            outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        finally:
            proc = self._procs.pop(job_id, None)
            if proc is not None and proc.returncode is None:  # this task failed, so the process must not live on
                proc.kill()
                await proc.wait()
            self._cancelled.discard(job_id)
            self._replenish()  # after the job, not beside it: warming a spare up costs a core for seconds
            await self._finish(job_id, model_id, out, live, outcome, spec)
            self._wake.set()

    @staticmethod
    def _failure(code: int, stderr: bytes) -> str:
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            why = " (the kernel kills a process that runs out of memory this way)" if code == -signal.SIGKILL else ""
            return f"the training process was killed by {name}{why}"
        lines = [line for line in stderr.decode(errors="replace").strip().splitlines() if line.strip()]
        return f"the training process exited with status {code}" + (f": {lines[-1][:300]}" if lines else "")

    @staticmethod
    def _on_progress(live: dict, m: dict) -> None:
        total = m["total_steps"]
        live["progress"] = {"step": m["step"], "total_steps": total, "fraction": m["step"] / total,
                            "loss": m["loss"], "accuracy": m["accuracy"], "eta_seconds": m["eta_seconds"]}
        if not live["history"] or live["history"][-1]["step"] != m["step"]:
            record_point(live["history"], m["step"], m["loss"], m["accuracy"])

    def _flush(self, job_id: str, progress: dict, history: list) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET progress=?, history=? WHERE id=? AND status='running'",
                         (json.dumps(progress), json.dumps(history), job_id))

    async def _finish(self, job_id: str, model_id: str, out: Path, live: dict, outcome: dict, spec: dict) -> None:
        status = outcome["status"]
        error = outcome.get("error")
        activated, reason, registered = False, None, None
        history = outcome.get("history") or live["history"]
        progress = dict(live["progress"])
        if status == "succeeded":
            metrics = outcome["metrics"]
            progress.update(step=metrics["steps"], fraction=metrics["steps"] / progress["total_steps"],
                            loss=metrics["loss"], accuracy=metrics["accuracy"], eta_seconds=0.0)
            try:
                await asyncio.to_thread(self.registry.register, model_id, out)
                registered = model_id
            except (checkpoint.CheckpointError, RegistryError) as exc:
                status, error = "failed", f"the trained checkpoint did not verify: {exc}"
                for path in (out, checkpoint.manifest_path(out)):
                    path.unlink(missing_ok=True)
            if registered:
                try:
                    activated, reason = await self._activate(model_id, outcome.get("gate") or {}, spec)
                except RegistryError as exc:  # the model stays registered; the old one stays active
                    reason = f"not activated: activation failed ({exc})"
        else:
            for path in (out, checkpoint.manifest_path(out)):  # never leave a checkpoint no row names
                path.unlink(missing_ok=True)
        await asyncio.to_thread(self._record_outcome, job_id, (status, error, now(), json.dumps(progress),
                                                                 json.dumps(history), registered, int(activated), reason))
        self._live.pop(job_id, None)
        for name in (f"{job_id}.run.json", f"{job_id}.json"):  # the job's record holds all that is kept
            (self.jobs_dir / name).unlink(missing_ok=True)
        self._update_gauge()
        await self._notify()
        log.info("job %s %s%s", job_id, status, f": {error}" if error else "")

    def _record_outcome(self, job_id: str, values: tuple) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE jobs SET status=?, error=?, finished_at=?, progress=?, history=?, model_id=?, "
                         "activated=?, activation_reason=? WHERE id=?", (*values, job_id))

    async def _activate(self, model_id: str, gate: dict, spec: dict) -> tuple[bool, str]:
        policy = spec.get("body", {}).get("activate", "if_better")
        if policy == "never":
            return False, "not activated: activate was 'never'"
        if policy == "if_better":
            compared = spec.get("compared_id")
            if gate.get("comparable"):
                if gate["new"] < gate["active"]:
                    return False, (f"not activated: scored {gate['new']:.4f} on this job's held-out set, "
                                   f"below the active model {compared!r} ({gate['active']:.4f})")
                why = (f"activated: scored {gate['new']:.4f} on this job's held-out set, at least the active "
                       f"model {compared!r} ({gate['active']:.4f})")
            elif compared is None:
                why = "activated: no model was active"
            else:
                return False, f"not activated: {gate.get('reason', 'no comparison was possible')}"
        else:
            why = "activated: activate was 'always'"
        await asyncio.to_thread(self.registry.activate, model_id)
        return True, why
