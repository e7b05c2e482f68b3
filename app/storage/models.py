"""The model registry: trained checkpoints as bytes in the database, shipped ones as read-only files, one active.
(The pointers themselves, production and the other aliases, are aliases.py's; they are re-exported here.)

Activation and deletion both lock the active pointer first (PostgreSQL: SELECT ... FOR UPDATE on its one row;
SQLite: BEGIN IMMEDIATE), so they serialize: the pointer can never name a deleted model, and concurrent
activations leave one winner whose version counts every activation. The foreign key from the pointer to
models backs this up in the schema. An activation on PostgreSQL also NOTIFYs, inside its transaction, so
other processes hear of it only once it is committed (see watcher.py).
"""
from __future__ import annotations

import builtins
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .aliases import RESERVED, activate_in, lock_pointer, referencing, set_serving_default
from .checkpoints import check_sha256, verify_checkpoint
from .engine import read, write
from .errors import Conflict, IntegrityFailure, NotFound
from .rows import Info, ModelRow, encode_info, model_row
from .schema import active_model, aliases, models, rollouts

Verifier = Callable[[bytes], None]


def _described():
    """Every column but the checkpoint bytes, plus their size and whether the model is the active one."""
    pointer = sa.select(active_model.c.model_id).where(active_model.c.id == 1).scalar_subquery()
    return sa.select(models.c.id, models.c.source, models.c.path, models.c.sha256, models.c.created_at,
                     models.c.info, sa.func.length(models.c.checkpoint).label("size"),
                     sa.case((models.c.id == pointer, True), else_=False).label("active"))


def insert_trained(conn: Connection, model_id: str, checkpoint: bytes, sha256: str, created_at: str,
                   info: Info) -> None:
    """Insert within the caller's write transaction; the bytes must already be verified."""
    if conn.execute(sa.select(models.c.id).where(models.c.id == model_id)).first() is not None:
        raise Conflict(f"model {model_id!r} is already registered")
    refuse_alias_name(conn, model_id)
    try:
        with conn.begin_nested():  # a concurrent insert of the same id turns into Conflict, not a dead transaction
            conn.execute(sa.insert(models).values(id=model_id, source="trained", path=None, sha256=sha256,
                                                  created_at=created_at, info=encode_info(info),
                                                  checkpoint=checkpoint))
    except sa.exc.IntegrityError as exc:
        raise Conflict(f"model {model_id!r} is already registered") from exc


def refuse_alias_name(conn: Connection, model_id: str) -> None:
    """A model's id is never an alias's name (nor one the service keeps for itself): `model` on the inference
    routes takes either, so the two must never be ambiguous."""
    if model_id in RESERVED or conn.execute(sa.select(aliases.c.name).where(aliases.c.name == model_id)).first():
        raise Conflict(f"model id {model_id!r} is an alias's name; a model never shares an alias's name")


def verified(checkpoint: bytes, sha256: str, model_id: str, verify: Verifier | None) -> None:
    check_sha256(checkpoint, sha256, f"model {model_id!r}")
    if verify is not None:
        try:
            verify(checkpoint)
        except IntegrityFailure:
            raise
        except Exception as exc:  # a verifier may raise anything: the checkpoint is refused either way
            raise IntegrityFailure(f"model {model_id!r} does not load: {exc}") from exc


class ModelStore:
    """Synchronous; safe to share between threads (each call takes its own pooled connection)."""

    def __init__(self, engine: Engine, verify: Verifier | None = verify_checkpoint):
        self.engine = engine
        self.verify = verify  # called with the bytes before a trained model is registered; raises if unusable

    # -- reading ---------------------------------------------------------------------------------------
    def list(self) -> list[ModelRow]:
        """Newest first."""
        with read(self.engine) as conn:
            rows = conn.execute(_described().order_by(models.c.created_at.desc(), models.c.id)).mappings().all()
        return [model_row(r) for r in rows]

    def get(self, model_id: str) -> ModelRow:
        with read(self.engine) as conn:
            row = conn.execute(_described().where(models.c.id == model_id)).mappings().first()
        if row is None:
            raise NotFound(f"model {model_id!r} is not registered")
        return model_row(row)

    def checkpoint_bytes(self, model_id: str) -> bytes:
        """The checkpoint, its SHA-256 checked again on every read (a shipped model's file is read from disk)."""
        with read(self.engine) as conn:
            row = conn.execute(sa.select(models.c.source, models.c.path, models.c.sha256, models.c.checkpoint)
                               .where(models.c.id == model_id)).first()
        if row is None:
            raise NotFound(f"model {model_id!r} is not registered")
        if row.source == "shipped":
            try:
                blob = Path(row.path).read_bytes()
            except OSError as exc:
                raise IntegrityFailure(f"model {model_id!r}: {row.path} cannot be read ({exc})") from exc
        else:
            blob = bytes(row.checkpoint)
        check_sha256(blob, row.sha256, f"model {model_id!r}")
        return blob

    def active(self) -> tuple[str | None, int]:
        """(model id or None when none was ever activated, version); the version grows on every activation."""
        with read(self.engine) as conn:
            row = conn.execute(sa.select(active_model.c.model_id, active_model.c.version)
                               .where(active_model.c.id == 1)).one()
        return row.model_id, row.version

    def set_default(self, model_id: str) -> None:
        """The model an unset pointer serves (the service's default), so production's first move records it as
        `previous`."""
        with write(self.engine) as conn:
            set_serving_default(conn, model_id)

    def count_trained(self) -> int:
        with read(self.engine) as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(models)
                                .where(models.c.source == "trained")).scalar_one()

    def oldest_trained(self, limit: int, exclude_active: bool = True) -> builtins.list[str]:  # list: the method
        """Ids of trained models, oldest first: the candidates a quota would remove."""
        query = sa.select(models.c.id).where(models.c.source == "trained")
        if exclude_active:
            pointer = sa.select(active_model.c.model_id).where(active_model.c.id == 1).scalar_subquery()
            query = query.where(sa.or_(pointer.is_(None), models.c.id != pointer))
        with read(self.engine) as conn:
            return list(conn.execute(query.order_by(models.c.created_at, models.c.id).limit(limit)).scalars())

    # -- writing ---------------------------------------------------------------------------------------
    def register_trained(self, model_id: str, checkpoint: bytes, sha256: str, created_at: str, info: Info) -> ModelRow:
        """Verify (SHA-256, then that it loads), then insert. Raises IntegrityFailure or Conflict (id taken)."""
        verified(checkpoint, sha256, model_id, self.verify)
        with write(self.engine) as conn:
            insert_trained(conn, model_id, checkpoint, sha256, created_at, info)
        return self.get(model_id)

    def upsert_shipped(self, model_id: str, path: Path | str, sha256: str, created_at: str, info: Info) -> ModelRow:
        """Record (or refresh) a checkpoint shipped in weights/; refuses to overwrite a trained model's id."""
        values = {"path": str(path), "sha256": sha256, "created_at": created_at, "info": encode_info(info)}
        with write(self.engine) as conn:
            source = conn.execute(sa.select(models.c.source).where(models.c.id == model_id)
                                  .with_for_update()).scalar()
            if source == "trained":
                raise Conflict(f"model {model_id!r} is a trained model; a shipped file cannot replace it")
            if source is None:
                refuse_alias_name(conn, model_id)
                try:
                    with conn.begin_nested():
                        conn.execute(sa.insert(models).values(id=model_id, source="shipped", checkpoint=None, **values))
                except sa.exc.IntegrityError:  # another process inserted it first: refresh it instead
                    conn.execute(sa.update(models).where(models.c.id == model_id, models.c.source == "shipped")
                                 .values(**values))
            else:
                conn.execute(sa.update(models).where(models.c.id == model_id).values(**values))
        return self.get(model_id)

    def activate(self, model_id: str, *, actor: str = "api", reason: str | None = None,
                 expected_generation: int | None = None) -> int:
        """Make model_id the active model (move production); returns the new version. NotFound if it is not
        registered; aliases.StaleGeneration if expected_generation is given and not the current version."""
        with write(self.engine) as conn:
            return activate_in(conn, model_id, actor=actor, reason=reason, expected_generation=expected_generation)

    def delete(self, model_id: str) -> None:
        """Remove a trained model; Conflict for a shipped or the active model (checked under the pointer's lock)."""
        with write(self.engine) as conn:
            active_id, _ = lock_pointer(conn)
            source = conn.execute(sa.select(models.c.source).where(models.c.id == model_id)).scalar()
            if source is None:
                raise NotFound(f"model {model_id!r} is not registered")
            if source == "shipped":
                raise Conflict(f"model {model_id!r} is shipped with the service and cannot be deleted")
            if model_id == active_id:
                raise Conflict(f"model {model_id!r} is active; activate another model first")
            named = referencing(conn, model_id)
            if named:
                raise Conflict(f"model {model_id!r} is what alias {named[0]!r} names; move or delete the alias first")
            trying = conn.execute(sa.select(rollouts.c.id).where(rollouts.c.candidate == model_id,
                                                                 rollouts.c.status == "running")).scalar()
            if trying is not None:
                raise Conflict(f"model {model_id!r} is the candidate of rollout {trying!r}; abort it first")
            conn.execute(sa.delete(models).where(models.c.id == model_id))
