"""Training jobs as a queue shared by every process and machine, with leases.

A worker claims a job (atomically: PostgreSQL's FOR UPDATE SKIP LOCKED, SQLite's BEGIN IMMEDIATE), and holds
it by renewing a lease. A worker "holds" a job while the row says status='running' and lease_owner=it; every
write a worker makes (progress, finish) is conditional on that, so a worker whose lease expired and whose job
was requeued or taken over cannot overwrite anything (no zombie writes). `requeue_expired` puts jobs whose
lease ran out back in the queue, or ends them 'failed' with 'worker lost' once they used up max_attempts.
Lease times come from the database clock (clock.py), so machines with skewed clocks agree.

`owner` must be unique per worker process instance (e.g. f"{host}:{pid}:{random}"): it is the lease's identity.
The config, progress, history and body columns are JSON the jobs layer writes; the store keeps them as given.
"""
from __future__ import annotations

import builtins
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from . import clock
from .checkpoints import verify_checkpoint
from .engine import is_postgres, read, write
from .errors import Conflict, NotFound, QueueFull, StorageError
from .models import Verifier, activate_in, insert_trained, verified
from .rows import Info
from .schema import JOB_STATUSES, TERMINAL, jobs

SUBMIT_LOCK_KEY = 0x5E025E0001  # pg_advisory_xact_lock key that serializes submissions (queue limit, seq)
WORKER_LOST = "worker lost"
SHOWN = [c for c in jobs.c if c.name != "body"]  # a body can be 10 MiB: read only by body()
JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as stored, without its body."""

    id: str
    seq: int
    status: str  # one of schema.JOB_STATUSES
    config: JSON  # the job as shown (dataset summarized)
    progress: JSON
    history: list[JSON]
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    model_id: str | None  # the id its model gets (set at submission)
    activated: bool
    activation_reason: str | None
    attempt: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: str | None
    worker_host: str | None
    worker_pid: int | None
    cancel_requested: bool

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def of(cls, row: RowMapping) -> JobRow:
        return cls(id=row["id"], seq=row["seq"], status=row["status"], config=json.loads(row["config"]),
                   progress=json.loads(row["progress"]), history=json.loads(row["history"]),
                   created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
                   error=row["error"], model_id=row["model_id"], activated=bool(row["activated"]),
                   activation_reason=row["activation_reason"], attempt=row["attempt"],
                   max_attempts=row["max_attempts"], lease_owner=row["lease_owner"],
                   lease_expires_at=row["lease_expires_at"], worker_host=row["worker_host"],
                   worker_pid=row["worker_pid"], cancel_requested=bool(row["cancel_requested"]))


@dataclass(frozen=True)
class NewJob:
    """A job to queue."""

    id: str
    config: JSON
    progress: JSON
    max_attempts: int
    body: JSON | None = None  # the full job, so any machine can run it; dropped once the job ends
    model_id: str | None = None
    history: list[JSON] = field(default_factory=list)
    created_at: str | None = None  # default: the database's now


class JobOutcome(TypedDict, total=False):
    """What a worker may record when it ends a job."""

    error: str
    progress: JSON
    history: list[JSON]
    activation_reason: str


class LeaseLost(Conflict):
    """The caller no longer holds the job's lease: it was requeued, taken over or ended by someone else."""


def _holding(job_id: str, owner: str):
    return sa.and_(jobs.c.id == job_id, jobs.c.lease_owner == owner, jobs.c.status == "running")


def _encode(outcome: JobOutcome) -> dict[str, Any]:
    unknown = set(outcome) - set(JobOutcome.__annotations__)
    if unknown:
        raise ValueError(f"a job's {sorted(unknown)} cannot be set when it finishes")
    return {key: json.dumps(value) if key in ("progress", "history") else value for key, value in outcome.items()}


class JobStore:
    """Synchronous; safe to share between threads (each call takes its own pooled connection)."""

    def __init__(self, engine: Engine, verify: Verifier | None = verify_checkpoint):
        self.engine = engine
        self.verify = verify  # checks a trained model's bytes in finish_with_model (see ModelStore)

    # -- reading ---------------------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRow:
        with read(self.engine) as conn:
            return self._get(conn, job_id)

    @staticmethod
    def _get(conn: Connection, job_id: str) -> JobRow:
        row = conn.execute(sa.select(*SHOWN).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return JobRow.of(row)

    def list(self, limit: int = 100) -> builtins.list[JobRow]:
        """Newest first (by submission order)."""
        with read(self.engine) as conn:
            rows = conn.execute(sa.select(*SHOWN).order_by(jobs.c.seq.desc()).limit(limit)).mappings().all()
        return [JobRow.of(r) for r in rows]

    def body(self, job_id: str) -> Any:
        """The full request body stored at submission (None if none was stored)."""
        with read(self.engine) as conn:
            row = conn.execute(sa.select(jobs.c.body).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return None if row.body is None else json.loads(row.body)

    def counts(self) -> dict[str, int]:
        """Jobs per status, every status present (0 when none)."""
        with read(self.engine) as conn:
            rows = conn.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)).all()
        counts = dict.fromkeys(JOB_STATUSES, 0)
        counts.update({status: n for status, n in rows})
        return counts

    def cancel_requested(self, job_id: str) -> bool:
        with read(self.engine) as conn:
            row = conn.execute(sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"job {job_id!r} does not exist")
        return bool(row.cancel_requested)

    # -- submitting ------------------------------------------------------------------------------------
    def submit(self, job: NewJob, queue_limit: int) -> JobRow:
        """Queue a job unless `queue_limit` jobs already wait (QueueFull); the check and the insert are one
        serialized transaction, so concurrent submissions never overshoot."""
        with write(self.engine) as conn:
            if is_postgres(conn):
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SUBMIT_LOCK_KEY)))
            queued = conn.execute(sa.select(sa.func.count()).select_from(jobs)
                                  .where(jobs.c.status == "queued")).scalar_one()
            if queued >= queue_limit:
                raise QueueFull(queued, queue_limit)
            if conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job.id)).first() is not None:
                raise Conflict(f"job {job.id!r} already exists")
            seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(jobs.c.seq), 0) + 1)).scalar_one()
            conn.execute(sa.insert(jobs).values(
                id=job.id, seq=seq, status="queued", config=json.dumps(job.config),
                body=None if job.body is None else json.dumps(job.body), progress=json.dumps(job.progress),
                history=json.dumps(job.history), created_at=job.created_at or clock.iso(clock.db_now(conn)),
                model_id=job.model_id, activated=False, attempt=0, max_attempts=job.max_attempts,
                cancel_requested=False))
            return self._get(conn, job.id)

    def request_cancel(self, job_id: str) -> JobRow:
        """A queued job ends 'cancelled' at once; a running one gets cancel_requested (its worker acts on it).
        Conflict once the job has ended."""
        with write(self.engine) as conn:
            status = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id).with_for_update()).scalar()
            if status is None:
                raise NotFound(f"job {job_id!r} does not exist")
            if status in TERMINAL:
                raise Conflict(f"job {job_id!r} has already ended ({status})")
            if status == "queued":
                conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(
                    status="cancelled", cancel_requested=True, finished_at=clock.iso(clock.db_now(conn)), body=None))
            else:
                conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(cancel_requested=True))
            return self._get(conn, job_id)

    # -- workers ---------------------------------------------------------------------------------------
    def claim(self, owner: str, host: str, pid: int, lease_s: float) -> JobRow | None:
        """Take the oldest queued job (None if there is none): running, attempt + 1, leased to owner."""
        with read(self.engine) as conn:  # an idle worker's poll should not take SQLite's write lock
            if conn.execute(sa.select(jobs.c.id).where(jobs.c.status == "queued").limit(1)).first() is None:
                return None
        with write(self.engine) as conn:
            query = (sa.select(jobs.c.id).where(jobs.c.status == "queued").order_by(jobs.c.seq).limit(1)
                     .with_for_update(skip_locked=True))
            job_id = conn.execute(query).scalar()
            if job_id is None:
                return None
            now = clock.db_now(conn)
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued").values(
                status="running", attempt=jobs.c.attempt + 1, started_at=clock.iso(now), lease_owner=owner,
                lease_expires_at=clock.after(now, lease_s), worker_host=host, worker_pid=pid))
            return self._get(conn, job_id)

    def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Extend the lease to now + lease_s; False when the caller no longer holds the job."""
        with write(self.engine) as conn:
            expires = clock.after(clock.db_now(conn), lease_s)
            return conn.execute(sa.update(jobs).where(_holding(job_id, owner))
                                .values(lease_expires_at=expires)).rowcount == 1

    def update_progress(self, job_id: str, owner: str, progress: JSON, history: builtins.list[JSON]) -> bool:
        """Store progress and history; False (nothing written) when the caller no longer holds the job."""
        with write(self.engine) as conn:
            return conn.execute(sa.update(jobs).where(_holding(job_id, owner)).values(
                progress=json.dumps(progress), history=json.dumps(history))).rowcount == 1

    def finish(self, job_id: str, owner: str, status: str, outcome: JobOutcome | None = None) -> bool:
        """End a held job with a terminal status and what it recorded. False (nothing written) when the caller
        no longer holds the job."""
        if status not in TERMINAL:
            raise ValueError(f"a job finishes as one of {TERMINAL}, not {status!r}")
        with write(self.engine) as conn:
            return self._finish(conn, job_id, owner, status, _encode(outcome or {}))

    @staticmethod
    def _finish(conn: Connection, job_id: str, owner: str, status: str, values: dict[str, Any]) -> bool:
        return conn.execute(sa.update(jobs).where(_holding(job_id, owner)).values(  # an ended job keeps no body
            status=status, finished_at=clock.iso(clock.db_now(conn)), lease_expires_at=None, body=None,
            **values)).rowcount == 1

    def finish_with_model(self, job_id: str, owner: str, *, model_id: str, checkpoint: bytes, sha256: str,
                          created_at: str, info: Info, activate: bool = False,
                          outcome: JobOutcome | None = None) -> int | None:
        """Register the job's trained model, optionally activate it, and end the job 'succeeded', all in one
        transaction: either all of it happens or none. Returns the new active version if it activated, else None.
        Raises IntegrityFailure (bad bytes; nothing written), Conflict (model id taken) or LeaseLost."""
        verified(checkpoint, sha256, model_id, self.verify)
        values = {**_encode(outcome or {}), "model_id": model_id, "activated": activate}
        with write(self.engine) as conn:
            # The lease first: on PostgreSQL this locks the row, so no requeue can slip in before the finish.
            held = conn.execute(sa.select(jobs.c.id).where(_holding(job_id, owner)).with_for_update()).first()
            if held is None:
                raise LeaseLost(f"job {job_id!r} is no longer held by {owner!r}")
            insert_trained(conn, model_id, checkpoint, sha256, created_at, info)
            version = activate_in(conn, model_id) if activate else None
            if not self._finish(conn, job_id, owner, "succeeded", values):
                raise LeaseLost(f"job {job_id!r} is no longer held by {owner!r}")
            return version

    def requeue_expired(self, now: datetime | None = None) -> dict[str, builtins.list[str]]:
        """Jobs whose lease ended before `now` (default: the database clock): back to queued while attempts
        remain, else failed with 'worker lost'; cancelled if a cancel was requested. Returns the ids by outcome."""
        outcome: dict[str, builtins.list[str]] = {"requeued": [], "failed": [], "cancelled": []}
        with write(self.engine) as conn:
            stamp = clock.iso(now if now is not None else clock.db_now(conn))
            expired = sa.and_(jobs.c.status == "running", jobs.c.lease_expires_at < stamp)
            rows = conn.execute(sa.select(jobs.c.id, jobs.c.attempt, jobs.c.max_attempts, jobs.c.cancel_requested)
                                .where(expired).order_by(jobs.c.seq).with_for_update(skip_locked=True)).all()
            ended = clock.iso(clock.db_now(conn))
            for row in rows:
                gone = {"lease_owner": None, "lease_expires_at": None}
                if row.cancel_requested:
                    kind, values = "cancelled", {"status": "cancelled", "finished_at": ended, "body": None, **gone}
                elif row.attempt < row.max_attempts:
                    kind, values = "requeued", {"status": "queued", "worker_host": None, "worker_pid": None, **gone}
                else:
                    kind, values = "failed", {"status": "failed", "error": WORKER_LOST, "finished_at": ended,
                                              "body": None, **gone}
                if conn.execute(sa.update(jobs).where(jobs.c.id == row.id, expired).values(**values)).rowcount:
                    outcome[kind].append(row.id)
        return outcome

    def release(self, job_id: str, owner: str) -> bool:
        """Hand a held job back to the queue, its attempt not counted (the runner is stopping, not failing).
        False when the caller no longer holds it."""
        with write(self.engine) as conn:
            return conn.execute(sa.update(jobs).where(_holding(job_id, owner)).values(
                status="queued", attempt=jobs.c.attempt - 1, lease_owner=None, lease_expires_at=None,
                worker_host=None, worker_pid=None, started_at=None)).rowcount == 1

    # -- housekeeping ----------------------------------------------------------------------------------
    def delete(self, job_id: str) -> None:
        """Forget an ended job; Conflict while it is queued or running."""
        with write(self.engine) as conn:
            status = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
            if status is None:
                raise NotFound(f"job {job_id!r} does not exist")
            if status not in TERMINAL:
                raise Conflict(f"job {job_id!r} is {status}; cancel it first")
            conn.execute(sa.delete(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(TERMINAL)))

    def count_finished(self) -> int:
        with read(self.engine) as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(jobs)
                                .where(jobs.c.status.in_(TERMINAL))).scalar_one()

    def purge_finished(self, keep: int) -> builtins.list[str]:
        """Delete the oldest ended jobs beyond the newest `keep`; returns the deleted ids."""
        if keep < 0:
            raise StorageError("keep must be at least 0")
        with write(self.engine) as conn:
            ids = list(conn.execute(sa.select(jobs.c.id).where(jobs.c.status.in_(TERMINAL))
                                    .order_by(jobs.c.seq.desc()).offset(keep)).scalars())
            for start in range(0, len(ids), 500):
                conn.execute(sa.delete(jobs).where(jobs.c.id.in_(ids[start:start + 500]),
                                                   jobs.c.status.in_(TERMINAL)))
        return ids
