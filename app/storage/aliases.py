"""Aliases: named, movable pointers to models, and the history of every move.

`production` is the active pointer (active_model's one row; production's generation is the pointer's version),
so the watcher, the jobs' conditional activation and /models/active keep reading one row. Every other alias is a
row of `aliases`; `previous` is moved to production's former target whenever production moves. Every change,
production's included, writes a history row (who, why, from what) in the same transaction.

Every write locks the pointer's row first (lock_pointer), so alias moves, activations and model deletions
serialize: no alias can be left naming a deleted model, and a move is a compare-and-swap on the generation
(`expected_generation`), checked under that lock and again by a conditional UPDATE. A change to the aliases table
bumps `active_model.aliases_version` (and NOTIFYs on PostgreSQL, inside the transaction), which is what other
processes watch to follow moves without reading the table on every request.
"""
from __future__ import annotations

import builtins
import json
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import clock
from .engine import is_postgres, read, write
from .errors import Conflict, NotFound
from .schema import active_model, alias_history, aliases, meta, models, rollouts

NOTIFY_CHANNEL = "seq2seq_active"
PRODUCTION = "production"
PREVIOUS = "previous"
RESERVED = (PRODUCTION, PREVIOUS)  # never model ids: the service moves these itself
NAME = re.compile(r"^[a-z0-9_-]{1,32}$")
TRAINED_PREFIX = "m-"  # trained models' generated ids start so (m-20260101-120000-a1b2c3): not an alias name
MAX_ALIASES = 100  # rows of `aliases`, `previous` included; creating more is a Conflict
MAX_REASON = 500
HISTORY_LIMIT = 1000  # the most history rows one read returns


@dataclass(frozen=True, slots=True)
class AliasRow:
    name: str
    model: str | None  # production before any activation: None (the service's default model serves)
    generation: int
    public: bool  # may be named on the inference routes without the key (production always)
    updated_at: str | None


@dataclass(frozen=True, slots=True)
class AliasMove:
    """One history row: the alias named `model` from `at` on (None: deleted), after `previous`."""

    name: str
    generation: int
    at: str | None  # None only for production's generation 0, before any activation (the default model)
    model: str | None
    previous: str | None
    reason: str | None
    actor: str


@dataclass(frozen=True, slots=True)
class AliasSnapshot:
    """Every alias but production, and the aliases_version they were read at (one transaction)."""

    version: int
    rows: dict[str, AliasRow]


class StaleGeneration(Conflict):
    """A compare-and-swap that lost: the alias is no longer at the generation the caller expected."""

    def __init__(self, name: str, expected: int, current: int, model: str | None):
        target = f"model {model!r}" if model else "nothing"
        super().__init__(f"expected_generation: alias {name!r} is at generation {current} ({target}), not {expected}; "
                         "read it again and retry with its current generation")
        self.name, self.expected, self.current, self.model = name, expected, current, model


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an alias name, or None."""
    if not NAME.match(name or ""):
        return "an alias name is 1 to 32 lower-case letters, digits, '-' and '_'"
    if name.startswith(TRAINED_PREFIX):
        return f"names starting {TRAINED_PREFIX!r} are reserved for trained models' ids"
    return None


# -- within a caller's write transaction -----------------------------------------------------------------
class UnderRollout(Conflict):
    """A move or deletion of an alias that a running rollout uses, by anyone but that rollout."""

    def __init__(self, name: str, rollout_id: str):
        super().__init__(f"alias {name!r} is under rollout {rollout_id!r}; promote or abort the rollout first "
                         f"(POST /rollouts/{rollout_id}/promote or /abort)")
        self.name, self.rollout_id = name, rollout_id


def running_rollout(conn: Connection, name: str) -> str | None:
    """The id of the running rollout on alias `name`, if any."""
    return conn.execute(sa.select(rollouts.c.id).where(rollouts.c.alias == name, rollouts.c.status == "running")
                        ).scalar()


def _guard(conn: Connection, name: str, actor: str) -> None:
    """Refuse to move an alias under a running rollout unless the rollout itself moves it (its promotion): a
    manual move would change the control under the rollout's feet, so it is refused rather than taken as an abort."""
    rollout_id = running_rollout(conn, name)
    if rollout_id is not None and actor != f"rollout {rollout_id}":
        raise UnderRollout(name, rollout_id)


def lock_pointer(conn: Connection) -> tuple[str | None, int]:
    """Read the active pointer (production) and hold it until the transaction ends."""
    row = conn.execute(sa.select(active_model.c.model_id, active_model.c.version)
                       .where(active_model.c.id == 1).with_for_update()).one()
    return row.model_id, row.version


def activate_in(conn: Connection, model_id: str, *, actor: str = "api", reason: str | None = None,
                expected_generation: int | None = None) -> int:
    """Move production (the active pointer) to model_id; returns its new generation (the pointer's version).
    Records the move, and moves `previous` to production's former target. StaleGeneration when
    expected_generation is given and not current; NotFound for an unknown model."""
    current, version = lock_pointer(conn)
    _guard(conn, PRODUCTION, actor)
    if expected_generation is not None and expected_generation != version:
        raise StaleGeneration(PRODUCTION, expected_generation, version, current)
    if conn.execute(sa.select(models.c.id).where(models.c.id == model_id)).first() is None:
        raise NotFound(f"model {model_id!r} is not registered")
    version += 1
    now = clock.iso(clock.db_now(conn))
    conn.execute(sa.update(active_model).where(active_model.c.id == 1)
                 .values(model_id=model_id, version=version, changed_at=now))
    served = current if current is not None else serving_default(conn)  # before any activation: the default
    _record(conn, PRODUCTION, version, now, model_id, served, reason, actor)
    if served is not None and served != model_id:
        _set(conn, PREVIOUS, served, now, reason=f"production moved from {served!r} to {model_id!r}", actor=actor)
    _notify(conn, {"model_id": model_id, "version": version})
    return version


DEFAULT_ROW = "default_model"  # storage_meta: the shipped model production means before any activation


def set_serving_default(conn: Connection, model_id: str) -> None:
    """Remember which model an unset pointer serves (SEQ2SEQ_DEFAULT_MODEL, once it is registered), so the
    first activation can name it as `previous`."""
    if conn.execute(sa.select(meta.c.value).where(meta.c.key == DEFAULT_ROW)).scalar() == model_id:
        return
    conn.execute(sa.delete(meta).where(meta.c.key == DEFAULT_ROW))
    conn.execute(sa.insert(meta).values(key=DEFAULT_ROW, value=model_id))


def serving_default(conn: Connection) -> str | None:
    """The registered model an unset pointer serves, or None if unknown or no longer registered."""
    model_id = conn.execute(sa.select(meta.c.value).where(meta.c.key == DEFAULT_ROW)).scalar()
    if model_id is None or conn.execute(sa.select(models.c.id).where(models.c.id == model_id)).first() is None:
        return None
    return model_id


def move_in(conn: Connection, name: str, model_id: str, *, expected_generation: int | None = None,
            reason: str | None = None, actor: str = "api", public: bool | None = None) -> AliasRow:
    """Create or move an alias other than production. public None keeps what the alias had (False when new)."""
    if name == PRODUCTION:
        raise ValueError("production moves with activate_in")
    lock_pointer(conn)
    _guard(conn, name, actor)
    if conn.execute(sa.select(models.c.id).where(models.c.id == name)).first() is not None:
        raise Conflict(f"name: {name!r} is a model's id; an alias never shares a model's id")
    row = _row(conn, name)
    current = row.generation if row is not None else _last_generation(conn, name)
    if expected_generation is not None and expected_generation != current:
        raise StaleGeneration(name, expected_generation, current, row.model if row is not None else None)
    if conn.execute(sa.select(models.c.id).where(models.c.id == model_id)).first() is None:
        raise NotFound(f"model {model_id!r} is not registered")
    if row is None and name != PREVIOUS:
        count = conn.execute(sa.select(sa.func.count()).select_from(aliases)).scalar_one()
        if count >= MAX_ALIASES:
            raise Conflict(f"there are {count} aliases already, the most this service keeps; delete one first")
    return _set(conn, name, model_id, clock.iso(clock.db_now(conn)), reason=reason, actor=actor, public=public,
                expected=current)


def delete_in(conn: Connection, name: str, *, expected_generation: int | None = None, reason: str | None = None,
              actor: str = "api") -> None:
    """Remove an alias (not production), recording it as a move to nothing."""
    if name == PRODUCTION:
        raise Conflict("production cannot be deleted: it is the active model; move it instead")
    lock_pointer(conn)
    _guard(conn, name, actor)
    row = _row(conn, name)
    if row is None:
        raise NotFound(f"alias {name!r} does not exist")
    if expected_generation is not None and expected_generation != row.generation:
        raise StaleGeneration(name, expected_generation, row.generation, row.model)
    gone = conn.execute(sa.delete(aliases).where(aliases.c.name == name, aliases.c.generation == row.generation))
    if gone.rowcount != 1:  # cannot happen under the pointer's lock; kept as the swap's own guard
        raise StaleGeneration(name, row.generation, _last_generation(conn, name), None)
    _record(conn, name, row.generation + 1, clock.iso(clock.db_now(conn)), None, row.model, reason, actor)
    bump(conn)


def referencing(conn: Connection, model_id: str) -> list[str]:
    """The aliases naming model_id, production first."""
    names = sorted(conn.execute(sa.select(aliases.c.name).where(aliases.c.model_id == model_id)).scalars())
    pointer = conn.execute(sa.select(active_model.c.model_id).where(active_model.c.id == 1)).scalar()
    return [PRODUCTION] * (pointer == model_id) + names


# -- internals -------------------------------------------------------------------------------------------
def _row(conn: Connection, name: str) -> AliasRow | None:
    row = conn.execute(sa.select(aliases).where(aliases.c.name == name)).first()
    return _alias(row) if row is not None else None


def _alias(row) -> AliasRow:
    return AliasRow(row.name, row.model_id, row.generation, bool(row.public), row.updated_at)


def _last_generation(conn: Connection, name: str) -> int:
    """An absent alias's generation: its last change's (a deletion), or 0 if it never existed."""
    return conn.execute(sa.select(sa.func.coalesce(sa.func.max(alias_history.c.generation), 0))
                        .where(alias_history.c.name == name)).scalar_one()


def _set(conn: Connection, name: str, model_id: str, now: str, *, reason: str | None, actor: str,
         public: bool | None = None, expected: int | None = None) -> AliasRow:
    """Point `name` at model_id (the pointer's lock held): a conditional UPDATE on the generation, or an INSERT."""
    row = _row(conn, name)
    if row is None:
        generation = (expected if expected is not None else _last_generation(conn, name)) + 1
        conn.execute(sa.insert(aliases).values(name=name, model_id=model_id, generation=generation,
                                               public=bool(public), updated_at=now))
        previous = None
    else:
        generation = row.generation + 1
        values = {"model_id": model_id, "generation": generation, "updated_at": now}
        if public is not None:
            values["public"] = public
        moved = conn.execute(sa.update(aliases).where(aliases.c.name == name, aliases.c.generation == row.generation)
                             .values(**values))
        if moved.rowcount != 1:  # cannot happen under the pointer's lock; kept as the swap's own guard
            raise StaleGeneration(name, row.generation, _last_generation(conn, name), None)
        previous = row.model
    _record(conn, name, generation, now, model_id, previous, reason, actor)
    bump(conn)
    return AliasRow(name, model_id, generation, bool(public) if row is None or public is not None else row.public, now)


def _record(conn: Connection, name: str, generation: int, at: str, model_id: str | None, previous: str | None,
            reason: str | None, actor: str) -> None:
    conn.execute(sa.insert(alias_history).values(name=name, generation=generation, at=at, model_id=model_id,
                                                 previous=previous, reason=(reason or None) and reason[:MAX_REASON],
                                                 actor=actor[:100]))


def bump(conn: Connection) -> None:
    """Tell every process to read the aliases (and the running rollouts) again."""
    version = conn.execute(sa.update(active_model).where(active_model.c.id == 1)
                           .values(aliases_version=active_model.c.aliases_version + 1)
                           .returning(active_model.c.aliases_version)).scalar_one()
    _notify(conn, {"aliases_version": version})


def _notify(conn: Connection, payload: dict) -> None:
    if is_postgres(conn):  # delivered only once the transaction commits (see watcher.py)
        conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, json.dumps(payload))))


def _move(row) -> AliasMove:
    return AliasMove(row.name, row.generation, row.at, row.model_id, row.previous, row.reason, row.actor)


class AliasStore:
    """Synchronous; safe to share between threads (each call takes its own pooled connection)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # -- reading ---------------------------------------------------------------------------------------
    def list(self) -> list[AliasRow]:
        """Production first, then the others by name."""
        with read(self.engine) as conn:
            rows = conn.execute(sa.select(aliases).order_by(aliases.c.name)).all()
            return [self._production(conn), *map(_alias, rows)]

    def get(self, name: str) -> AliasRow:
        with read(self.engine) as conn:
            if name == PRODUCTION:
                return self._production(conn)
            row = _row(conn, name)
        if row is None:
            raise NotFound(f"alias {name!r} does not exist")
        return row

    def snapshot(self) -> AliasSnapshot:
        """What a process following the aliases holds: every alias but production, at one aliases_version."""
        with read(self.engine) as conn:
            version = conn.execute(sa.select(active_model.c.aliases_version).where(active_model.c.id == 1)).scalar_one()
            rows = conn.execute(sa.select(aliases)).all()
        return AliasSnapshot(version, {row.name: _alias(row) for row in rows})

    def history(self, name: str, *, at: str | None = None, limit: int = 100) -> builtins.list[AliasMove]:
        """Moves of `name`, newest first; with `at` (a clock.iso timestamp), only those made at or before it, so
        the first one is what the alias named then."""
        query = sa.select(alias_history).where(alias_history.c.name == name)
        if at is not None:
            query = query.where(alias_history.c.at <= at)
        with read(self.engine) as conn:
            rows = conn.execute(query.order_by(alias_history.c.generation.desc())
                                .limit(max(1, min(limit, HISTORY_LIMIT)))).all()
        return [_move(row) for row in rows]

    def first_move(self, name: str) -> AliasMove | None:
        """The oldest recorded move of `name`, if any."""
        with read(self.engine) as conn:
            row = conn.execute(sa.select(alias_history).where(alias_history.c.name == name)
                               .order_by(alias_history.c.generation).limit(1)).first()
        return _move(row) if row is not None else None

    def pointing_at(self, model_id: str) -> builtins.list[str]:
        """The aliases naming model_id, production first."""
        with read(self.engine) as conn:
            return referencing(conn, model_id)

    def by_model(self) -> dict[str, builtins.list[str]]:
        """Every alias by the model it names (production first), for listing models in one read."""
        with read(self.engine) as conn:
            pointer = conn.execute(sa.select(active_model.c.model_id).where(active_model.c.id == 1)).scalar()
            rows = conn.execute(sa.select(aliases.c.name, aliases.c.model_id).order_by(aliases.c.name)).all()
        found: dict[str, builtins.list[str]] = {pointer: [PRODUCTION]} if pointer is not None else {}
        for row in rows:
            found.setdefault(row.model_id, []).append(row.name)
        return found

    # -- writing ---------------------------------------------------------------------------------------
    def move(self, name: str, model_id: str, *, expected_generation: int | None = None, reason: str | None = None,
             actor: str = "api", public: bool | None = None) -> AliasRow:
        """Create or move an alias (production too: an activation without loading the model first). Raises
        StaleGeneration, NotFound (unknown model) or Conflict (a model's id as name, too many aliases)."""
        with write(self.engine) as conn:
            if name == PRODUCTION:
                activate_in(conn, model_id, actor=actor, reason=reason, expected_generation=expected_generation)
                return self._production(conn)
            return move_in(conn, name, model_id, expected_generation=expected_generation, reason=reason,
                           actor=actor, public=public)

    def delete(self, name: str, *, expected_generation: int | None = None, reason: str | None = None,
               actor: str = "api") -> None:
        with write(self.engine) as conn:
            delete_in(conn, name, expected_generation=expected_generation, reason=reason, actor=actor)

    @staticmethod
    def _production(conn: Connection) -> AliasRow:
        row = conn.execute(sa.select(active_model.c.model_id, active_model.c.version, active_model.c.changed_at)
                           .where(active_model.c.id == 1)).one()
        return AliasRow(PRODUCTION, row.model_id, row.version, True, row.changed_at)
