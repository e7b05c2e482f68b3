"""Training jobs as a queue shared by every process and machine, with leases.

A worker claims a job (atomically: PostgreSQL's FOR UPDATE SKIP LOCKED, SQLite's BEGIN IMMEDIATE), and holds
it by renewing a lease. A claim gets a Lease: the job, the worker (`owner`) and a token new on every claim. A worker
"holds" a job while the row says status='running' with that owner and token; every write a worker makes (renew,
progress, finish, hand-back, register) is conditional on all three, so a worker whose lease expired and whose job
was requeued or taken over, even by itself, cannot overwrite anything (no zombie writes). `requeue_expired` puts
jobs whose lease ran out back in the queue, or ends them 'failed' with 'worker lost' once they used up max_attempts.
Lease times come from the database clock (clock.py), so machines with skewed clocks agree.

`owner` must be unique per worker process instance (e.g. f"{host}:{pid}:{random}"): it is the lease's identity.
The config, progress, history and body columns are JSON the jobs layer writes; the store keeps them as given.
"""
from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from . import clock
from .aliases import PRODUCTION, running_rollout
from .checkpoints import verify_checkpoint
from .engine import is_postgres, queued_writer, read, write
from .errors import Conflict, NotFound, QueueFull, QuotaFull, StorageError
from .models import Verifier, activate_in, insert_trained, lock_pointer, verified
from .rows import Info
from .schema import JOB_STATUSES, TERMINAL, jobs, models

SUBMIT_LOCK_KEY = 0x5E025E0001  # pg_advisory_xact_lock key that serializes submissions (queue limit, seq)
WORKER_LOST = "worker lost"
SHOWN = [c for c in jobs.c if c.name != "body"]  # a body can be 10 MiB: read only by body()
JSON = dict[str, Any]
Pointer = tuple[str | None, int]  # the active pointer as read: (model id or None, version)


@dataclass(frozen=True, slots=True)
class Lease:
    """One claim of one job: the worker and a token new on every claim. Every write a worker makes names it."""

    job_id: str
    owner: str
    token: str


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
    lease_token: str | None
    handbacks: int  # times a stopping worker handed it back to the queue

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL

    @property
    def lease(self) -> Lease | None:
        """The claim that holds it, while it runs."""
        if self.status != "running" or self.lease_owner is None or self.lease_token is None:
            return None
        return Lease(self.id, self.lease_owner, self.lease_token)

    @classmethod
    def of(cls, row: RowMapping) -> JobRow:
        return cls(id=row["id"], seq=row["seq"], status=row["status"], config=json.loads(row["config"]),
                   progress=json.loads(row["progress"]), history=json.loads(row["history"]),
                   created_at=row["created_at"], started_at=row["started_at"], finished_at=row["finished_at"],
                   error=row["error"], model_id=row["model_id"], activated=bool(row["activated"]),
                   activation_reason=row["activation_reason"], attempt=row["attempt"],
                   max_attempts=row["max_attempts"], lease_owner=row["lease_owner"],
                   lease_expires_at=row["lease_expires_at"], worker_host=row["worker_host"],
                   worker_pid=row["worker_pid"], cancel_requested=bool(row["cancel_requested"]),
                   lease_token=row["lease_token"], handbacks=row["handbacks"])


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


@dataclass(frozen=True)
class Finished:
    """A job ended with its model registered: whether the model became active, and why (as the job records it)."""

    activated: bool
    reason: str | None
    version: int | None  # the pointer's new version when it activated


@dataclass(frozen=True)
class ExpiredLeases:
    """Leases found expired at `stamp` (the database's clock, ISO): job id -> the lease token then."""

    stamp: str
    tokens: dict[str, str | None]


class LeaseLost(Conflict):
    """The caller no longer holds the job's lease: it was requeued, taken over or ended by someone else."""


def _holding(lease: Lease):
    return sa.and_(jobs.c.id == lease.job_id, jobs.c.lease_owner == lease.owner, jobs.c.lease_token == lease.token,
                   jobs.c.status == "running")


def _encode(outcome: JobOutcome) -> dict[str, Any]:
    unknown = set(outcome) - set(JobOutcome.__annotations__)
    if unknown:
        raise ValueError(f"a job's {sorted(unknown)} cannot be set when it finishes")
    return {key: json.dumps(value) if key in ("progress", "history") else value for key, value in outcome.items()}


@contextmanager
def _write_waiting(engine: Engine, lock_wait_s: float | None) -> Iterator[Connection]:
    """A write transaction that waits at most lock_wait_s for a lock (SQLite's write lock, PostgreSQL's row locks)
    and then fails with a transient error the caller may retry; None: the engine's own wait."""
    if lock_wait_s is None:
        with write(engine) as conn:
            yield conn
        return
    if engine.dialect.name != "sqlite":
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{max(1, int(lock_wait_s * 1000))}ms'"))
            yield conn
        return
    with queued_writer(engine, lock_wait_s), engine.connect() as conn:  # the process's queue first, then SQLite's
        raw = conn.connection.driver_connection  # outside a transaction: PRAGMA busy_timeout is per connection
        if raw is None:
            raise StorageError("the SQLite connection is closed")
        before = raw.execute("PRAGMA busy_timeout").fetchone()[0]
        raw.execute(f"PRAGMA busy_timeout={max(1, int(lock_wait_s * 1000))}")
        try:
            with conn.execution_options(sqlite_begin="IMMEDIATE").begin():
                yield conn
        finally:
            if not conn.invalidated:
                raw.execute(f"PRAGMA busy_timeout={int(before)}")


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
            return self._counts(conn)

    @staticmethod
    def _counts(conn: Connection) -> dict[str, int]:
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
    def submit(self, job: NewJob, queue_limit: int, *, records: int | None = None,
               trained_models: int | None = None) -> JobRow:
        """Queue a job unless `queue_limit` jobs already wait (QueueFull), there are `records` jobs of any status,
        or `trained_models` trained models counting those the queued and running jobs will add (QuotaFull). The
        checks and the insert are one serialized transaction, so concurrent submissions never overshoot."""
        with write(self.engine) as conn:
            return self.submit_in(conn, job, queue_limit, records=records, trained_models=trained_models)

    @classmethod
    def submit_in(cls, conn: Connection, job: NewJob, queue_limit: int, *, records: int | None = None,
                  trained_models: int | None = None) -> JobRow:
        """submit within the caller's write transaction (a learning cycle queues its job with the cycle's row)."""
        if is_postgres(conn):
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(SUBMIT_LOCK_KEY)))
        cls._check_limits(conn, queue_limit, records, trained_models)
        if conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job.id)).first() is not None:
            raise Conflict(f"job {job.id!r} already exists")
        seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(jobs.c.seq), 0) + 1)).scalar_one()
        conn.execute(sa.insert(jobs).values(
            id=job.id, seq=seq, status="queued", config=json.dumps(job.config),
            body=None if job.body is None else json.dumps(job.body), progress=json.dumps(job.progress),
            history=json.dumps(job.history), created_at=job.created_at or clock.iso(clock.db_now(conn)),
            model_id=job.model_id, activated=False, attempt=0, max_attempts=job.max_attempts,
            cancel_requested=False, handbacks=0))
        return cls._get(conn, job.id)

    @staticmethod
    def _check_limits(conn: Connection, queue_limit: int, records: int | None, trained_models: int | None) -> None:
        def count(table, *where):
            return sa.select(sa.func.count()).select_from(table).where(*where).scalar_subquery()

        # One statement, so one snapshot: a job that ends with its model between two counts is counted once.
        row = conn.execute(sa.select(
            count(jobs, jobs.c.status == "queued").label("queued"),
            count(jobs, jobs.c.status == "running").label("running"),
            count(jobs).label("records"),
            count(models, models.c.source == "trained").label("trained"))).one()
        if row.queued >= queue_limit:
            raise QueueFull(row.queued, queue_limit)
        if records is not None and row.records >= records:
            raise QuotaFull("job records", row.records, records)
        trained = row.trained + row.queued + row.running
        if trained_models is not None and trained >= trained_models:
            raise QuotaFull("trained models, counting those the queued and running jobs will add", trained,
                            trained_models)

    def request_cancel(self, job_id: str) -> JobRow:
        """A queued job ends 'cancelled' at once; a running one gets cancel_requested (its worker acts on it).
        Conflict once the job has ended."""
        with write(self.engine) as conn:
            return self.cancel_in(conn, job_id)

    @classmethod
    def cancel_in(cls, conn: Connection, job_id: str) -> JobRow:
        """request_cancel within the caller's write transaction."""
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
        return cls._get(conn, job_id)

    # -- workers ---------------------------------------------------------------------------------------
    def claim(self, owner: str, host: str, pid: int, lease_s: float) -> JobRow | None:
        """Take the oldest queued job (None if there is none): running, attempt + 1, leased to owner under a new
        token (the row's `lease`)."""
        waiting = sa.and_(jobs.c.status == "queued", sa.not_(jobs.c.cancel_requested))
        with read(self.engine) as conn:  # an idle worker's poll should not take SQLite's write lock
            if conn.execute(sa.select(jobs.c.id).where(waiting).limit(1)).first() is None:
                return None
        with write(self.engine) as conn:
            query = (sa.select(jobs.c.id).where(waiting).order_by(jobs.c.seq).limit(1)
                     .with_for_update(skip_locked=True))
            job_id = conn.execute(query).scalar()
            if job_id is None:
                return None
            now = clock.db_now(conn)
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id, waiting).values(
                status="running", attempt=jobs.c.attempt + 1, started_at=clock.iso(now), lease_owner=owner,
                lease_token=secrets.token_hex(16), lease_expires_at=clock.after(now, lease_s), worker_host=host,
                worker_pid=pid))
            return self._get(conn, job_id)

    def renew(self, lease: Lease, lease_s: float) -> bool:
        """Extend the lease to now + lease_s; False when the claim no longer holds the job."""
        with write(self.engine) as conn:
            expires = clock.after(clock.db_now(conn), lease_s)
            return conn.execute(sa.update(jobs).where(_holding(lease))
                                .values(lease_expires_at=expires)).rowcount == 1

    def update_progress(self, lease: Lease, progress: JSON, history: builtins.list[JSON]) -> bool:
        """Store progress and history; False (nothing written) when the claim no longer holds the job."""
        with write(self.engine) as conn:
            return conn.execute(sa.update(jobs).where(_holding(lease)).values(
                progress=json.dumps(progress), history=json.dumps(history))).rowcount == 1

    def finish(self, lease: Lease, status: str, outcome: JobOutcome | None = None, *,
               lock_wait_s: float | None = None) -> bool:
        """End a held job with a terminal status and what it recorded. False (nothing written) when the claim
        no longer holds the job. lock_wait_s: see finish_with_model."""
        if status not in TERMINAL:
            raise ValueError(f"a job finishes as one of {TERMINAL}, not {status!r}")
        with _write_waiting(self.engine, lock_wait_s) as conn:
            return self._finish(conn, lease, status, _encode(outcome or {}))

    @staticmethod
    def _finish(conn: Connection, lease: Lease, status: str, values: dict[str, Any]) -> bool:
        return conn.execute(sa.update(jobs).where(_holding(lease)).values(  # an ended job keeps no body
            status=status, finished_at=clock.iso(clock.db_now(conn)), lease_expires_at=None, body=None,
            **values)).rowcount == 1

    def finish_with_model(self, lease: Lease, *, model_id: str, checkpoint: bytes, sha256: str, created_at: str,
                          info: Info, activate: bool = False, compared: Pointer | None = None,
                          outcome: JobOutcome | None = None, lock_wait_s: float | None = None) -> Finished:
        """Register the job's trained model, activate it if asked, and end the job 'succeeded', all in one
        transaction: either all of it happens or none.

        Activation is conditional, under the pointer's lock: not if a cancel was asked for (even after the
        training process ended), and, when `compared` is given (the pointer an if_better job was scored
        against), not if the pointer moved since (an operator's rollback, another job's activation). Then the
        model is kept, not activated, and the job records why. lock_wait_s bounds each lock wait (a transient
        error the caller may retry; a retry after a commit whose answer was lost returns what was committed).
        Raises IntegrityFailure (bad bytes; nothing written), Conflict (model id taken) or LeaseLost."""
        verified(checkpoint, sha256, model_id, self.verify)
        recorded = _encode(outcome or {})
        with _write_waiting(self.engine, lock_wait_s) as conn:
            # The lease first: on PostgreSQL this locks the row, so no requeue can slip in before the finish.
            held = conn.execute(sa.select(jobs.c.cancel_requested).where(_holding(lease)).with_for_update()).first()
            if held is None:
                return self._committed(conn, lease, model_id)
            insert_trained(conn, model_id, checkpoint, sha256, created_at, info)
            reason, version = recorded.get("activation_reason"), None
            if activate:
                why_not = self._why_not(conn, bool(held.cancel_requested), compared)
                if why_not is not None:
                    activate = False
                    gate = f" (the gate: {reason.removeprefix('activated: ')})" if reason else ""
                    reason = f"not activated: {why_not}; the model is kept{gate}"
                else:
                    version = activate_in(conn, model_id, actor=f"job {lease.job_id}", reason=reason)
            values = {**recorded, "model_id": model_id, "activated": activate, "activation_reason": reason,
                      "error": None}
            if not self._finish(conn, lease, "succeeded", values):
                raise LeaseLost(f"job {lease.job_id!r} is no longer held by this claim")
            return Finished(activate, reason, version)

    @staticmethod
    def _why_not(conn: Connection, cancel_requested: bool, compared: Pointer | None) -> str | None:
        if cancel_requested:
            return "a cancel was asked for after training had ended"
        rollout_id = running_rollout(conn, PRODUCTION)
        if rollout_id is not None:
            return f"rollout {rollout_id} is running on production; it decides what production names"
        if compared is None:
            return None
        now = lock_pointer(conn)
        if now == tuple(compared):
            return None

        def named(pointer: Pointer) -> str:
            return f"{pointer[0]!r} (version {pointer[1]})" if pointer[0] else f"none (version {pointer[1]})"

        return (f"the active model changed while the job trained, from {named(compared)} to {named(now)}, and "
                "that choice stands")

    def _committed(self, conn: Connection, lease: Lease, model_id: str) -> Finished:
        """The job is not held: LeaseLost, unless this very claim already ended it with this model (a retry
        after a commit whose answer was lost)."""
        row = conn.execute(sa.select(jobs.c.status, jobs.c.lease_owner, jobs.c.lease_token, jobs.c.model_id,
                                     jobs.c.activated, jobs.c.activation_reason)
                           .where(jobs.c.id == lease.job_id)).first()
        if row is not None and (row.status, row.lease_owner, row.lease_token, row.model_id) == (
                "succeeded", lease.owner, lease.token, model_id) and \
                conn.execute(sa.select(models.c.id).where(models.c.id == model_id)).first() is not None:
            return Finished(bool(row.activated), row.activation_reason, None)
        raise LeaseLost(f"job {lease.job_id!r} is no longer held by this claim")

    def expired_leases(self) -> ExpiredLeases:
        """The leases that have run out by the database's clock, read without changing anything: the first half
        of a sweep that can tell a dead worker from a database that was away (JobRunner's sweep)."""
        with read(self.engine) as conn:
            stamp = clock.iso(clock.db_now(conn))
            rows = conn.execute(sa.select(jobs.c.id, jobs.c.lease_token).where(
                jobs.c.status == "running", jobs.c.lease_expires_at < stamp)).all()
        return ExpiredLeases(stamp, {row.id: row.lease_token for row in rows})

    def requeue_expired(self, now: datetime | None = None, *,
                        seen: ExpiredLeases | None = None) -> dict[str, builtins.list[str]]:
        """Jobs whose lease ended before `now` (default: the database clock): back to queued while attempts
        remain, else failed with 'worker lost'; cancelled if a cancel was requested. Returns the ids by outcome.

        seen: only the leases expired_leases() found, and only if no one renewed or re-claimed them since (a
        holder that renews after the read moves its expiry past seen.stamp, and a new claim changes the token)."""
        outcome: dict[str, builtins.list[str]] = {"requeued": [], "failed": [], "cancelled": []}
        if seen is not None and not seen.tokens:
            return outcome
        with write(self.engine) as conn:
            if seen is not None:
                expired = sa.and_(jobs.c.status == "running", jobs.c.lease_expires_at < seen.stamp,
                                  sa.or_(*(sa.and_(jobs.c.id == job_id, jobs.c.lease_token == token)
                                           for job_id, token in seen.tokens.items())))
            else:
                stamp = clock.iso(now if now is not None else clock.db_now(conn))
                expired = sa.and_(jobs.c.status == "running", jobs.c.lease_expires_at < stamp)
            rows = conn.execute(sa.select(jobs.c.id, jobs.c.attempt, jobs.c.max_attempts, jobs.c.cancel_requested)
                                .where(expired).order_by(jobs.c.seq).with_for_update(skip_locked=True)).all()
            ended = clock.iso(clock.db_now(conn))
            for row in rows:
                gone = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}
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

    def release(self, lease: Lease, max_handbacks: int | None = None) -> str | None:
        """Hand a held job back to the queue, its attempt not counted (the runner is stopping, not failing), and
        count the hand-back. Past max_handbacks it ends 'failed' instead (an evicted pod must not cycle a job
        forever); a job whose cancel was asked for ends 'cancelled'. Returns the job's new status, or None when
        the claim no longer holds it."""
        with write(self.engine) as conn:
            row = conn.execute(sa.select(jobs.c.handbacks, jobs.c.cancel_requested).where(_holding(lease))
                               .with_for_update()).first()
            if row is None:
                return None
            count = row.handbacks + 1
            gone = {"lease_owner": None, "lease_token": None, "lease_expires_at": None, "handbacks": count}
            if row.cancel_requested:
                self._end_released(conn, lease, "cancelled", gone)
                return "cancelled"
            if max_handbacks is not None and count > max_handbacks:
                self._end_released(conn, lease, "failed", {
                    **gone, "error": f"handed back to the queue {count} times by stopping workers, more than the "
                                     f"{max_handbacks} allowed (SEQ2SEQ_JOB_MAX_HANDBACKS)"})
                return "failed"
            conn.execute(sa.update(jobs).where(_holding(lease)).values(
                status="queued", attempt=jobs.c.attempt - 1, worker_host=None, worker_pid=None, started_at=None,
                **gone))
            return "queued"

    @staticmethod
    def _end_released(conn: Connection, lease: Lease, status: str, values: dict[str, Any]) -> None:
        conn.execute(sa.update(jobs).where(_holding(lease)).values(
            status=status, finished_at=clock.iso(clock.db_now(conn)), body=None, **values))

    def retry_or_fail(self, lease: Lease, error: str, outcome: JobOutcome | None = None, *,
                      lock_wait_s: float | None = None) -> str | None:
        """The attempt failed in a way another attempt may not (a hung training process): back to the queue
        while attempts remain (this one counted), else 'failed'; 'cancelled' if a cancel was asked for. `error`
        is recorded either way. Returns the new status, or None when the claim no longer holds the job."""
        values = {**_encode(outcome or {}), "error": error}
        with _write_waiting(self.engine, lock_wait_s) as conn:
            row = conn.execute(sa.select(jobs.c.attempt, jobs.c.max_attempts, jobs.c.cancel_requested)
                               .where(_holding(lease)).with_for_update()).first()
            if row is None:
                return None
            if row.cancel_requested or row.attempt >= row.max_attempts:
                status = "cancelled" if row.cancel_requested else "failed"
                self._finish(conn, lease, status, values)
                return status
            conn.execute(sa.update(jobs).where(_holding(lease)).values(
                status="queued", lease_owner=None, lease_token=None, lease_expires_at=None, worker_host=None,
                worker_pid=None, **values))
            return "queued"

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
