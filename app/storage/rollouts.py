"""Rollouts, their decisions, and the live counters every replica adds to.

A rollout is started in a write transaction under the pointer's lock (like every alias move): the alias's current
model becomes the control, and the partial unique index `uq_rollouts_running_alias` keeps one running rollout per
alias whatever two replicas do at once. Every change of a rollout (start, step, end) bumps
`active_model.aliases_version`, so every process re-reads the running rollouts as it re-reads the aliases.

`decide` applies one decision once: under the pointer's lock (PostgreSQL: a row lock; SQLite: the write
transaction), it re-reads the rollout and its counters, asks the caller's pure function again, and applies a
step up, a promotion (the alias moves with actor `rollout ID`) or a roll back only if the rollout is still at the
step it was read at. A second replica that decides a moment later sees the new step and its empty counters.

The live counters are (subject, name) -> value rows that replicas add to with an upsert (`add`), in key order so
that two replicas' flushes never deadlock on PostgreSQL.
"""
from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from . import clock
from .aliases import PRODUCTION, activate_in, bump, lock_pointer, move_in
from .engine import is_postgres, read, write
from .errors import Conflict, NotFound
from .schema import aliases, live_counters, models, rollout_decisions, rollouts

LIST_LIMIT = 100
DECISIONS_LIMIT = 1000
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class RolloutRow:
    id: str
    alias: str
    control: str
    candidate: str
    config: dict[str, Any]
    status: str
    step: int
    percent: float
    shadow: bool
    started_at: str
    step_started_at: str
    ended_at: str | None
    reason: str | None
    cause: str | None


@dataclass(frozen=True, slots=True)
class DecisionRow:
    at: str
    action: str
    step: int
    percent: float
    reason: str
    actor: str
    figures: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a decision does to a running rollout: step up (status running), or end it."""
    action: str  # step_up, promote, roll_back, abort
    step: int
    percent: float
    reason: str
    figures: dict[str, Any]
    cause: str | None = None
    actor: str = "decider"


def _rollout(row) -> RolloutRow:
    return RolloutRow(row.id, row.alias, row.control, row.candidate, json.loads(row.config), row.status, row.step,
                      row.percent, bool(row.shadow), row.started_at, row.step_started_at, row.ended_at, row.reason,
                      row.cause)


def new_id(now: datetime) -> str:
    return f"r-{now.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def step_seconds(row: RolloutRow, now: datetime) -> float:
    return max(0.0, (now - clock.parse(row.step_started_at)).total_seconds())


class RolloutStore:
    """Synchronous; each call takes its own pooled connection."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # -- reading ---------------------------------------------------------------------------------------
    def get(self, rollout_id: str) -> RolloutRow:
        with read(self.engine) as conn:
            row = conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).first()
        if row is None:
            raise NotFound(f"rollout {rollout_id[:64]!r} does not exist")
        return _rollout(row)

    def list(self, limit: int = LIST_LIMIT) -> list[RolloutRow]:
        """Newest first."""
        with read(self.engine) as conn:
            rows = conn.execute(sa.select(rollouts).order_by(rollouts.c.started_at.desc(), rollouts.c.id.desc())
                                .limit(limit)).all()
        return [_rollout(row) for row in rows]

    def running(self) -> tuple[builtins.list[RolloutRow], datetime]:
        """The running rollouts, and the database's time."""
        with read(self.engine) as conn:
            rows = conn.execute(sa.select(rollouts).where(rollouts.c.status == "running")).all()
            return [_rollout(row) for row in rows], clock.db_now(conn)

    def decisions(self, rollout_id: str, limit: int = DECISIONS_LIMIT) -> builtins.list[DecisionRow]:
        """Oldest first."""
        with read(self.engine) as conn:
            rows = conn.execute(sa.select(rollout_decisions).where(rollout_decisions.c.rollout_id == rollout_id)
                                .order_by(rollout_decisions.c.seq).limit(limit)).all()
        return [DecisionRow(r.at, r.action, r.step, r.percent, r.reason, r.actor, json.loads(r.figures))
                for r in rows]

    def counters(self, subjects: Iterable[str]) -> dict[str, dict[str, int]]:
        wanted = sorted(set(subjects))
        found: dict[str, dict[str, int]] = {s: {} for s in wanted}
        if not wanted:
            return found
        with read(self.engine) as conn:
            found.update(_counters(conn, wanted))
        return found

    def now(self) -> datetime:
        with read(self.engine) as conn:
            return clock.db_now(conn)

    # -- writing ---------------------------------------------------------------------------------------
    def start(self, *, alias: str, candidate: str, config: Mapping[str, Any], percent: float, shadow: bool,
              default_model: str, actor: str = "api") -> RolloutRow:
        """Conflict when the alias has a running rollout, or already names the candidate; NotFound for an unknown
        alias or candidate. Production before any activation names default_model."""
        with write(self.engine) as conn:
            return start_in(conn, alias=alias, candidate=candidate, config=config, percent=percent, shadow=shadow,
                            default_model=default_model, actor=actor)

    def decide(self, rollout_id: str, step: int,
               judge: Callable[[RolloutRow, dict[str, dict[str, int]], datetime], Outcome | None]) -> Outcome | None:
        """Apply judge's outcome once: under the pointer's lock, only if the rollout still runs at `step`. judge
        gets the rollout, its counters (every subject `rollout:ID:*`) and the database's time, and returns None to
        hold. Returns what was applied, or None."""
        with write(self.engine) as conn:
            lock_pointer(conn)
            row = conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).first()
            if row is None or row.status != "running" or row.step != step:
                return None  # decided already, here or on another replica
            rollout = _rollout(row)
            now = clock.db_now(conn)
            counters = _counters(conn, None, prefix=f"rollout:{rollout_id}:")
            outcome = judge(rollout, counters, now)
            if outcome is None:
                return None
            self._apply(conn, rollout, outcome, clock.iso(now))
            return outcome

    def end(self, rollout_id: str, outcome: Outcome) -> RolloutRow:
        """A manual promotion or abort; Conflict when the rollout is no longer running."""
        with write(self.engine) as conn:
            lock_pointer(conn)
            row = conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).first()
            if row is None:
                raise NotFound(f"rollout {rollout_id[:64]!r} does not exist")
            if row.status != "running":
                raise Conflict(f"rollout {rollout_id!r} has already ended ({row.status})")
            rollout = _rollout(row)
            self._apply(conn, rollout, outcome, clock.iso(clock.db_now(conn)))
            return _rollout(conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).one())

    @staticmethod
    def _apply(conn: Connection, rollout: RolloutRow, outcome: Outcome, at: str) -> None:
        reason = outcome.reason[:MAX_REASON]
        where = sa.update(rollouts).where(rollouts.c.id == rollout.id, rollouts.c.status == "running")
        if outcome.action == "step_up":
            conn.execute(where.values(step=outcome.step, percent=outcome.percent, step_started_at=at))
        else:
            if outcome.action == "promote":
                actor, why = f"rollout {rollout.id}", f"promoted by rollout {rollout.id}: {reason}"
                if rollout.alias == PRODUCTION:
                    activate_in(conn, rollout.candidate, actor=actor, reason=why)
                else:
                    move_in(conn, rollout.alias, rollout.candidate, actor=actor, reason=why)
            status = {"promote": "promoted", "roll_back": "rolled_back", "abort": "aborted"}[outcome.action]
            conn.execute(where.values(status=status, percent=outcome.percent, ended_at=at, reason=reason,
                                      cause=outcome.cause))
        _decision(conn, rollout.id, at, outcome.action, outcome.step, outcome.percent, reason, outcome.actor,
                  outcome.figures)
        bump(conn)

    def add(self, increments: Mapping[tuple[str, str], int]) -> None:
        """Add each (subject, name)'s increment to its counter, creating it at 0 first; one transaction."""
        rows = [{"subject": s, "name": n, "value": v} for (s, n), v in sorted(increments.items()) if v]
        if not rows:
            return
        with write(self.engine) as conn:
            statement = (postgresql.insert if is_postgres(conn) else sqlite.insert)(live_counters)
            # executemany: one statement shape, compiled once (a .values(rows) statement is compiled per call)
            conn.execute(statement.on_conflict_do_update(
                index_elements=["subject", "name"], set_={"value": live_counters.c.value + statement.excluded.value}),
                rows)



def start_in(conn: Connection, *, alias: str, candidate: str, config: Mapping[str, Any], percent: float,
             shadow: bool, default_model: str, actor: str = "api", expected_control: str | None = None) -> RolloutRow:
    """RolloutStore.start within the caller's write transaction. expected_control: Conflict unless the alias names
    it now (a learning cycle's gate compared its candidate with that model)."""
    pointer, _ = lock_pointer(conn)
    named = pointer or default_model if alias == PRODUCTION else conn.execute(
        sa.select(aliases.c.model_id).where(aliases.c.name == alias)).scalar()
    if named is None:
        raise NotFound(f"alias {alias!r} does not exist")
    control: str = named
    if expected_control is not None and control != expected_control:
        raise Conflict(f"alias {alias!r} names {control!r} now, not {expected_control!r}")
    if conn.execute(sa.select(models.c.id).where(models.c.id == candidate)).first() is None:
        raise NotFound(f"model {candidate!r} is not registered")
    if control == candidate:
        raise Conflict(f"alias {alias!r} already names {candidate!r}: nothing to roll out")
    running = conn.execute(sa.select(rollouts.c.id).where(rollouts.c.alias == alias,
                                                          rollouts.c.status == "running")).scalar()
    if running is not None:
        raise Conflict(f"rollout {running!r} is already running on alias {alias!r}; one at a time")
    now = clock.db_now(conn)
    at = clock.iso(now)
    rollout_id = new_id(now)
    try:
        with conn.begin_nested():  # the index is the last word when two starts race past the check
            conn.execute(sa.insert(rollouts).values(
                id=rollout_id, alias=alias, control=control, candidate=candidate,
                config=json.dumps(dict(config)), status="running", step=0, percent=percent, shadow=shadow,
                started_at=at, step_started_at=at))
    except sa.exc.IntegrityError:
        raise Conflict(f"a rollout is already running on alias {alias!r}; one at a time") from None
    _decision(conn, rollout_id, at, "start", 0, percent,
              f"started on {alias!r}: control {control!r}, candidate {candidate!r}"
              + (" (shadow: no traffic to the candidate)" if shadow else f", {percent:g}% to the candidate"),
              actor, {"config": dict(config)})
    bump(conn)
    return _rollout(conn.execute(sa.select(rollouts).where(rollouts.c.id == rollout_id)).one())


def _counters(conn: Connection, subjects: list[str] | None, prefix: str | None = None) -> dict[str, dict[str, int]]:
    query = sa.select(live_counters)
    if subjects is not None:
        query = query.where(live_counters.c.subject.in_(subjects))
    if prefix is not None:
        query = query.where(live_counters.c.subject.startswith(prefix, autoescape=True))
    found: dict[str, dict[str, int]] = {}
    for row in conn.execute(query):
        found.setdefault(row.subject, {})[row.name] = int(row.value)
    return found


def _decision(conn: Connection, rollout_id: str, at: str, action: str, step: int, percent: float, reason: str,
              actor: str, figures: dict[str, Any]) -> None:
    conn.execute(sa.insert(rollout_decisions).values(
        rollout_id=rollout_id, at=at, action=action, step=step, percent=percent, reason=reason[:MAX_REASON * 4],
        actor=actor[:100], figures=json.dumps(figures, default=str)))

