"""Learning policies (one per alias) and the cycles they start.

A cycle is started once per threshold crossing, whatever the number of replicas that see the crossing at once:
`start_cycle` locks the policy's row (PostgreSQL: FOR UPDATE; SQLite: the write transaction), and inserts the cycle
and queues its job only if the policy still reads as the caller read it (the same feedback high-water mark
`last_seq` and the same count of cycles) and no cycle of the alias is open. It then moves the mark to the last
event the cycle read. A replica that read the same state a moment later finds it moved and starts nothing; the
unique (alias, number) and the partial unique index on the open cycle of an alias are the database's last word.

Every other change of a cycle (its rollout started, its end) is a conditional update on the status it was read at,
so two replicas that advance the same cycle at once change it once. The usage a policy learns from is the feedback
on models its alias named (its history), was rolled out to (rollouts' candidates), or, for production before any
activation, the service's default model.
"""
from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import clock
from .aliases import PRODUCTION, lock_pointer
from .engine import read, write
from .errors import Conflict, NotFound
from .feedback import FeedbackRow, _row
from .jobs import JobRow, JobStore, NewJob
from .rollouts import RolloutRow, start_in
from .schema import active_model, alias_history, aliases, feedback, learning_cycles, learning_policies, rollouts

LIST_LIMIT = 100
MAX_REASON = 1000
EVENTS_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class PolicyRow:
    alias: str
    enabled: bool
    config: dict[str, Any]
    updated_at: str
    enabled_at: str | None
    last_seq: int  # the feedback high-water mark of the last cycle: events after it are new
    cycles: int  # cycles started
    last_cycle_at: str | None


@dataclass(frozen=True, slots=True)
class CycleRow:
    id: str
    alias: str
    number: int
    trigger: str
    status: str  # training, rolling_out, ended
    outcome: str | None
    reason: str | None
    control: str
    job_id: str | None
    candidate: str | None
    rollout_id: str | None
    feedback_after: int
    feedback_through: int
    counts: dict[str, Any]
    data: dict[str, Any]
    gate: dict[str, Any] | None
    created_at: str
    updated_at: str
    ended_at: str | None

    @property
    def open(self) -> bool:
        return self.status != "ended"


@dataclass(frozen=True, slots=True)
class Due:
    """What the trigger reads of one policy, in one snapshot."""

    policy: PolicyRow
    new_events: int  # events in the alias's usage after the policy's mark
    newest_seq: int  # the newest of them (the mark a cycle started now moves to)
    open_cycle: CycleRow | None
    control: str  # the model the alias names now
    now: datetime


@dataclass(frozen=True)
class NewCycle:
    id: str  # cycle_id(); its job's config names it
    trigger: str
    control: str
    feedback_through: int
    counts: dict[str, Any]
    data: dict[str, Any]
    job: NewJob


class Unchanged(Conflict):
    """The policy moved since the caller read it: another replica started the cycle, or someone changed it."""


def _policy(row) -> PolicyRow:
    return PolicyRow(row.alias, bool(row.enabled), json.loads(row.config), row.updated_at, row.enabled_at,
                     int(row.last_seq), row.cycles, row.last_cycle_at)


def _cycle(row) -> CycleRow:
    return CycleRow(row.id, row.alias, row.number, row.trigger, row.status, row.outcome, row.reason, row.control,
                    row.job_id, row.candidate, row.rollout_id, int(row.feedback_after), int(row.feedback_through),
                    json.loads(row.counts), json.loads(row.data), None if row.gate is None else json.loads(row.gate),
                    row.created_at, row.updated_at, row.ended_at)


def cycle_id(now: datetime) -> str:
    return f"c-{now.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def named_model(conn: Connection, alias: str, default_model: str) -> str | None:
    """What the alias names now (production before any activation: the default model)."""
    if alias == PRODUCTION:
        pointer = conn.execute(sa.select(active_model.c.model_id).where(active_model.c.id == 1)).scalar()
        return pointer or default_model
    return conn.execute(sa.select(aliases.c.model_id).where(aliases.c.name == alias)).scalar()


def usage_models(conn: Connection, alias: str, default_model: str) -> builtins.list[str]:
    """The models whose feedback is the alias's usage: every model it named, was rolled out to, or (production)
    the default model that serves before any activation."""
    found = set(conn.execute(sa.select(alias_history.c.model_id).where(
        alias_history.c.name == alias, alias_history.c.model_id.is_not(None)).distinct()).scalars())
    found |= set(conn.execute(sa.select(rollouts.c.candidate).where(rollouts.c.alias == alias).distinct()).scalars())
    now = named_model(conn, alias, default_model)
    if now is not None:
        found.add(now)
    if alias == PRODUCTION:
        found.add(default_model)
    return sorted(found)


class LearningStore:
    """Synchronous; each call takes its own pooled connection."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # -- policies --------------------------------------------------------------------------------------
    def policies(self) -> builtins.list[PolicyRow]:
        with read(self.engine) as conn:
            return [_policy(r) for r in conn.execute(sa.select(learning_policies).order_by(learning_policies.c.alias))]

    def policy(self, alias: str) -> PolicyRow | None:
        with read(self.engine) as conn:
            row = conn.execute(sa.select(learning_policies).where(learning_policies.c.alias == alias)).first()
        return None if row is None else _policy(row)

    def put_policy(self, alias: str, enabled: bool, config: Mapping[str, Any]) -> PolicyRow:
        """Create or replace the alias's policy. Turning it on starts the interval's clock; the high-water mark and
        the cycle count are kept (feedback recorded before the first policy counts as new)."""
        with write(self.engine) as conn:
            now = clock.iso(clock.db_now(conn))
            row = conn.execute(sa.select(learning_policies).where(learning_policies.c.alias == alias)
                               .with_for_update()).first()
            values = {"enabled": enabled, "config": json.dumps(dict(config)), "updated_at": now}
            if row is None:
                conn.execute(sa.insert(learning_policies).values(
                    alias=alias, enabled_at=now if enabled else None, last_seq=0, cycles=0, **values))
            else:
                if enabled and not row.enabled:
                    values["enabled_at"] = now
                conn.execute(sa.update(learning_policies).where(learning_policies.c.alias == alias).values(**values))
            return _policy(conn.execute(sa.select(learning_policies).where(learning_policies.c.alias == alias)).one())

    def named(self, alias: str, default_model: str) -> str | None:
        """The model the alias names now; None when it does not exist."""
        with read(self.engine) as conn:
            return named_model(conn, alias, default_model)

    # -- what the trigger reads ------------------------------------------------------------------------
    def due(self, alias: str, default_model: str) -> Due | None:
        """The policy, the new events in the alias's usage, its open cycle: None without a policy or a model."""
        with read(self.engine) as conn:
            row = conn.execute(sa.select(learning_policies).where(learning_policies.c.alias == alias)).first()
            control = named_model(conn, alias, default_model)
            if row is None or control is None:
                return None
            policy = _policy(row)
            scope = usage_models(conn, alias, default_model)
            count, newest = conn.execute(sa.select(sa.func.count(), sa.func.max(feedback.c.seq)).where(
                feedback.c.model_id.in_(scope), feedback.c.seq > policy.last_seq)).one()
            open_row = conn.execute(sa.select(learning_cycles).where(learning_cycles.c.alias == alias,
                                                                     learning_cycles.c.status != "ended")).first()
            return Due(policy, int(count), int(newest or policy.last_seq),
                       None if open_row is None else _cycle(open_row), control, clock.db_now(conn))

    def events(self, alias: str, default_model: str, through: int, limit: int) -> builtins.list[FeedbackRow]:
        """The alias's usage up to seq `through`, at most the newest `limit` events, oldest first."""
        with read(self.engine) as conn:
            scope = usage_models(conn, alias, default_model)
            rows = conn.execute(sa.select(feedback).where(feedback.c.model_id.in_(scope), feedback.c.seq <= through)
                                .order_by(feedback.c.seq.desc()).limit(limit)).mappings().all()
        return [_row(r) for r in reversed(rows)]

    def acceptance(self, alias: str, default_model: str, width: int, since: str) -> builtins.list[dict[str, Any]]:
        """The alias's feedback since `since` in time buckets (the received time's first `width` characters: 10 a
        day, 13 an hour, 16 a minute), per model: impressions with feedback, accepted, typed, typed in the top 3."""
        bucket = sa.func.substr(feedback.c.received_at, 1, width).label("bucket")
        query = sa.select(
            feedback.c.model_id, bucket, sa.func.count().label("n"),
            sa.func.sum(sa.case((feedback.c.accepted_rank.is_not(None), 1), else_=0)).label("accepted"),
            sa.func.sum(sa.case((feedback.c.typed.is_not(None), 1), else_=0)).label("typed"),
            sa.func.sum(sa.case((feedback.c.typed_rank <= 3, 1), else_=0)).label("hit3"))
        with read(self.engine) as conn:
            scope = usage_models(conn, alias, default_model)
            rows = conn.execute(query.where(feedback.c.model_id.in_(scope), feedback.c.received_at >= since)
                                .group_by(feedback.c.model_id, bucket).order_by(bucket, feedback.c.model_id)).all()
        return [{"model": r.model_id, "at": r.bucket, "impressions": int(r.n), "accepted": int(r.accepted or 0),
                 "typed": int(r.typed or 0), "hit3": int(r.hit3 or 0)} for r in rows]

    # -- cycles ----------------------------------------------------------------------------------------
    def start_cycle(self, alias: str, read_at: tuple[int, int], new: NewCycle, queue_limit: int, *,
                    records: int | None = None, trained_models: int | None = None) -> tuple[CycleRow, JobRow]:
        """Insert the cycle and queue its job, once: only if the policy is enabled and still at `read_at`
        (last_seq, cycles) and the alias has no open cycle; else Unchanged. The job's quotas as JobStore.submit."""
        with write(self.engine) as conn:
            row = conn.execute(sa.select(learning_policies).where(learning_policies.c.alias == alias)
                               .with_for_update()).first()
            if row is None or (not row.enabled and new.trigger != "manual"):
                raise Unchanged(f"alias {alias!r} has no enabled learning policy")
            if (int(row.last_seq), row.cycles) != tuple(read_at):
                raise Unchanged(f"alias {alias!r}'s learning state moved: a cycle was started meanwhile")
            open_id = conn.execute(sa.select(learning_cycles.c.id).where(
                learning_cycles.c.alias == alias, learning_cycles.c.status != "ended")).scalar()
            if open_id is not None:
                raise Unchanged(f"cycle {open_id!r} of alias {alias!r} has not ended yet; one at a time")
            job = JobStore.submit_in(conn, new.job, queue_limit, records=records, trained_models=trained_models)
            now = clock.db_now(conn)
            at = clock.iso(now)
            number = row.cycles + 1
            new_id = new.id
            try:
                with conn.begin_nested():  # the unique indexes are the last word if two starts race past the checks
                    conn.execute(sa.insert(learning_cycles).values(
                        id=new_id, alias=alias, number=number, trigger=new.trigger, status="training",
                        control=new.control, job_id=job.id, candidate=new.job.model_id,
                        feedback_after=int(row.last_seq), feedback_through=max(int(row.last_seq), new.feedback_through),
                        counts=json.dumps(new.counts), data=json.dumps(new.data), created_at=at, updated_at=at))
            except sa.exc.IntegrityError:
                raise Unchanged(f"another cycle of alias {alias!r} was started at the same moment") from None
            conn.execute(sa.update(learning_policies).where(learning_policies.c.alias == alias).values(
                last_seq=max(int(row.last_seq), new.feedback_through), cycles=number, last_cycle_at=at))
            return self._get(conn, new_id), job

    def get(self, cycle: str) -> CycleRow:
        with read(self.engine) as conn:
            return self._get(conn, cycle)

    @staticmethod
    def _get(conn: Connection, cycle: str) -> CycleRow:
        row = conn.execute(sa.select(learning_cycles).where(learning_cycles.c.id == cycle)).first()
        if row is None:
            raise NotFound(f"learning cycle {cycle[:64]!r} does not exist")
        return _cycle(row)

    def list(self, alias: str | None = None, limit: int = LIST_LIMIT) -> builtins.list[CycleRow]:
        """Newest first."""
        query = sa.select(learning_cycles)
        if alias is not None:
            query = query.where(learning_cycles.c.alias == alias)
        with read(self.engine) as conn:
            rows = conn.execute(query.order_by(learning_cycles.c.created_at.desc(), learning_cycles.c.number.desc())
                                .limit(limit)).all()
        return [_cycle(r) for r in rows]

    def open_cycles(self) -> builtins.list[CycleRow]:
        with read(self.engine) as conn:
            rows = conn.execute(sa.select(learning_cycles).where(learning_cycles.c.status != "ended")
                                .order_by(learning_cycles.c.created_at)).all()
        return [_cycle(r) for r in rows]

    def end(self, cycle: str, status: str, outcome: str, reason: str, gate: Mapping[str, Any] | None = None) -> bool:
        """End a cycle read at `status`; False (nothing written) when it is no longer at that status."""
        with write(self.engine) as conn:
            return self._end(conn, cycle, status, outcome, reason, gate)

    @staticmethod
    def _end(conn: Connection, cycle: str, status: str, outcome: str, reason: str,
             gate: Mapping[str, Any] | None) -> bool:
        at = clock.iso(clock.db_now(conn))
        values: dict[str, Any] = {"status": "ended", "outcome": outcome, "reason": reason[:MAX_REASON],
                                  "updated_at": at, "ended_at": at}
        if gate is not None:
            values["gate"] = json.dumps(dict(gate))
        return conn.execute(sa.update(learning_cycles).where(learning_cycles.c.id == cycle,
                                                             learning_cycles.c.status == status)
                            .values(**values)).rowcount == 1

    def roll_out(self, cycle: str, gate: Mapping[str, Any], *, config: Mapping[str, Any], percent: float,
                 default_model: str) -> RolloutRow | None:
        """The gate passed: start the candidate's rollout on the alias and move the cycle to rolling_out, in one
        transaction, only if the cycle is still training. A rollout that cannot start (the alias moved since the
        cycle started, another rollout runs on it) ends the cycle 'failed' with why, in the same transaction.
        None when the cycle was not training any more (another replica advanced it) or the rollout could not start."""
        with write(self.engine) as conn:
            lock_pointer(conn)
            row = conn.execute(sa.select(learning_cycles).where(learning_cycles.c.id == cycle)).first()
            if row is None or row.status != "training" or row.candidate is None:
                return None
            try:
                rollout = start_in(conn, alias=row.alias, candidate=row.candidate, config=config, percent=percent,
                                   shadow=False, default_model=default_model, actor=f"learning {cycle}",
                                   expected_control=row.control)
            except (Conflict, NotFound) as exc:
                self._end(conn, cycle, "training", "failed", f"the gate passed but the rollout could not start: {exc}",
                          gate)
                return None
            conn.execute(sa.update(learning_cycles).where(learning_cycles.c.id == cycle).values(
                status="rolling_out", rollout_id=rollout.id, gate=json.dumps(dict(gate)),
                updated_at=clock.iso(clock.db_now(conn))))
            return rollout

    def running_rollout(self, alias: str) -> str | None:
        with read(self.engine) as conn:
            return conn.execute(sa.select(rollouts.c.id).where(rollouts.c.alias == alias,
                                                               rollouts.c.status == "running")).scalar()
