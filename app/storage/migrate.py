"""Bring a database to the current schema, once, however many processes start together.

`migrate(url)` takes a lock, runs the Alembic migrations shipped in `migrations/` (configured in code: no
alembic.ini), then the one-off legacy import, and releases the lock. The lock: on PostgreSQL a session-level
pg_advisory_lock on a dedicated connection (released even if the process dies, when its session ends); on
SQLite an fcntl.flock on `<database>.migrate-lock` beside the file (released by the kernel on exit). The
processes that wait find the schema current and do nothing.
"""
from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine

from .engine import is_postgres, make_engine, sqlite_path
from .legacy import LegacyReport, import_legacy

log = logging.getLogger("seq2seq.storage.migrate")
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x5E025E0000  # pg_advisory_lock key; any constant the application uses for nothing else


@dataclass
class MigrationResult:
    before: str | None          # the revision found (None: an empty database)
    after: str                  # the revision now (the head)
    applied: list[str]          # revisions this call applied, oldest first; empty if another process did them
    legacy: LegacyReport | None  # what this call imported from the previous version, if anything


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration, built in code; `connection` is what env.py migrates."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision(script: ScriptDirectory | None = None) -> str:
    head = (script or ScriptDirectory.from_config(alembic_config())).get_current_head()
    if head is None:  # only a broken install: the migrations ship with the code
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    if is_postgres(engine):
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sa.select(sa.func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
            try:
                yield
            finally:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(MIGRATION_LOCK_KEY)))
        return
    path = sqlite_path(engine.url)
    if path is None:  # an in-memory database belongs to one process
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrate-lock"), "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def migrate(url: str | URL | Engine, legacy_data_dir: Path | str | None = None) -> MigrationResult:
    """Migrate to the head revision, then import legacy data (see legacy.py) if there is any.

    legacy_data_dir: the previous version's DATA_DIR; needed only when the target is not the SQLite file in
    that directory (a SQLite target defaults to its own folder). Accepts a URL or an engine it then reuses."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with migration_lock(engine):
            before = current_revision(engine)
            script = ScriptDirectory.from_config(alembic_config())
            head = head_revision(script)
            applied = [rev.revision for rev in reversed(list(script.iterate_revisions(head, before)))]
            if applied:
                log.info("migrating the database from %s to %s", before or "empty", head)
                with engine.connect() as conn:
                    command.upgrade(alembic_config(conn), "head")
            legacy = import_legacy(engine, legacy_data_dir)
            return MigrationResult(before, head, applied, legacy)
    finally:
        if engine is not url:
            engine.dispose()
