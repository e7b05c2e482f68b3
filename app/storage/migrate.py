"""Bring a database to the current schema, once, however many processes start together; or only check that
the schema is one this code can run on.

`migrate(url)` takes a lock, runs the Alembic migrations shipped in `migrations/` (configured in code: no
alembic.ini), then the legacy import, and releases the lock. The lock: on PostgreSQL a session-level
pg_advisory_lock on a dedicated connection (released even if the process dies, when its session ends); on
SQLite an fcntl.flock on `<database>.migrate-lock` beside the file (released by the kernel on exit). Both
are waited for at most `lock_timeout_s` (MigrationLockTimeout). The processes that wait find the schema
current and do nothing.

`check_schema(engine)` migrates nothing: what servers and workers do when one place migrates (SEQ2SEQ_MIGRATE
=check, the cluster files). Both accept a database that is *ahead* of this code when the newer schema says
this code still fits it:

- each revision module may declare `oldest_compatible = "<revision>"`: the oldest code revision that still
  runs correctly on the schema this revision leaves (an additive change that old code ignores names its
  parent; a change old code would break on leaves it out, which means "only this revision's code");
- a migration records its head's declaration in storage_meta (`schema_oldest_compatible`), so an older
  image, which does not ship the newer revision's module, reads it from the database;
- a database at a revision this code does not know is accepted when that recorded revision is this code's
  head or one of its ancestors; otherwise SchemaMismatch says which image is needed.
"""
from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine

from .engine import Timeouts, is_postgres, make_engine, read, sqlite_path, write
from .errors import MigrationLockTimeout, SchemaMismatch
from .legacy import LegacyReport, import_legacy
from .schema import meta

log = logging.getLogger("seq2seq.storage.migrate")
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x5E025E0000  # pg_advisory_lock key; any constant the application uses for nothing else
COMPAT_KEY = "schema_oldest_compatible"  # storage_meta row: the oldest code revision the schema still suits
LOCK_TIMEOUT_S = 120.0  # how long a migration waits for another process's migration
MODES = ("auto", "check")
MIGRATE_HINT = "run `python -m app migrate` with this version's image (or start one server with SEQ2SEQ_MIGRATE=auto)"


@dataclass
class MigrationResult:
    before: str | None          # the revision found (None: an empty database)
    after: str                  # the revision now (the head, or the newer compatible revision found)
    applied: list[str]          # revisions this call applied, oldest first; empty if another process did them
    legacy: LegacyReport | None  # what this call imported from the previous version, if anything
    ahead: bool = False         # the database is at a newer revision that declares this code compatible


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration, built in code; `connection` is what env.py migrates."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision(script: ScriptDirectory | None = None) -> str:
    head = (script or _script()).get_current_head()
    if head is None:  # only a broken install: the migrations ship with the code
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def oldest_compatible(revision: str, script: ScriptDirectory | None = None) -> str:
    """What `revision`'s module declares (see the module docstring); itself when it declares nothing."""
    found = (script or _script()).get_revision(revision)
    if found is None:
        raise RuntimeError(f"revision {revision} is not among the migrations in {MIGRATIONS_DIR}")
    return getattr(found.module, "oldest_compatible", revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def recorded_compatibility(engine: Engine) -> str | None:
    """The oldest compatible code revision the last migration recorded; None when none was (or no table)."""
    try:
        with read(engine) as conn:
            return conn.execute(sa.select(meta.c.value).where(meta.c.key == COMPAT_KEY)).scalar()
    except sa.exc.DBAPIError:
        return None


def _known(script: ScriptDirectory) -> set[str]:
    return {rev.revision for rev in script.walk_revisions()}


def _ancestry(script: ScriptDirectory, head: str) -> set[str]:
    return {rev.revision for rev in script.iterate_revisions(head, "base")}


def _accept_ahead(engine: Engine, current: str, script: ScriptDirectory) -> None:
    """`current` is unknown to this code: accept it if the schema says this code still fits, else refuse."""
    head = head_revision(script)
    needs = recorded_compatibility(engine)
    if needs is not None and needs in _ancestry(script, head):
        log.warning("the database is at revision %s, newer than this code's %s; it declares code from revision %s "
                    "on compatible, so this process runs on it without migrating", current, head, needs)
        return
    wanted = f"code at revision {needs} or later" if needs else f"code that knows revision {current}"
    raise SchemaMismatch(
        f"the database schema is at revision {current}, newer than this version of seq2seq-serve knows (its latest "
        f"is {head}), and that schema needs {wanted}: deploy the newer image, or downgrade the database with the "
        "newer image first")


def check_schema(engine: Engine, script: ScriptDirectory | None = None) -> MigrationResult:
    """Migrate nothing; raise SchemaMismatch unless this code can run on the database as it is."""
    script = script or _script()
    head = head_revision(script)
    current = current_revision(engine)
    if current == head:
        return MigrationResult(current, head, [], None)
    if current is None:
        raise SchemaMismatch(f"the database has no schema yet (SEQ2SEQ_MIGRATE=check migrates nothing): {MIGRATE_HINT}")
    if current in _known(script):
        raise SchemaMismatch(f"the database schema is at revision {current} and this version needs {head} "
                             f"(SEQ2SEQ_MIGRATE=check migrates nothing): {MIGRATE_HINT}")
    _accept_ahead(engine, current, script)
    return MigrationResult(current, current, [], None, ahead=True)


@contextmanager
def _unbounded_statements(conn: Connection, lock_timeout_s: float | None = None) -> Iterator[Connection]:
    """PostgreSQL: lift the session's statement_timeout (a migration, or a wait for the migration lock, may take
    longer than any request should) and set lock_timeout; the connection's own values come back afterwards."""
    if not is_postgres(conn):
        yield conn
        return
    conn.exec_driver_sql("SET statement_timeout = 0")
    if lock_timeout_s is not None:
        conn.exec_driver_sql(f"SET lock_timeout = {max(1, int(lock_timeout_s * 1000))}")
    conn.commit()
    try:
        yield conn
    finally:
        conn.rollback()
        conn.exec_driver_sql("RESET statement_timeout")
        conn.exec_driver_sql("RESET lock_timeout")
        conn.commit()


def _lock_timed_out(where: str, lock_timeout_s: float) -> MigrationLockTimeout:
    return MigrationLockTimeout(
        f"another process held the migration lock ({where}) for more than {lock_timeout_s:g} s "
        "(SEQ2SEQ_MIGRATE_LOCK_TIMEOUT_S): a long migration is running, or one is stuck; see what holds it before "
        "starting again")


@contextmanager
def migration_lock(engine: Engine, lock_timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    if is_postgres(engine):
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with _unbounded_statements(conn, lock_timeout_s):
                try:
                    conn.execute(sa.select(sa.func.pg_advisory_lock(MIGRATION_LOCK_KEY)))
                except sa.exc.OperationalError as exc:
                    if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                        raise _lock_timed_out(f"pg_advisory_lock {MIGRATION_LOCK_KEY:#x}", lock_timeout_s) from None
                    raise
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
    lock_path = path.with_name(path.name + ".migrate-lock")
    with open(lock_path, "a+b") as lock_file:
        deadline = time.monotonic() + lock_timeout_s
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _lock_timed_out(f"flock on {lock_path}", lock_timeout_s) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _record_compatibility(engine: Engine, value: str) -> None:
    with write(engine) as conn:
        if conn.execute(sa.select(meta.c.value).where(meta.c.key == COMPAT_KEY)).scalar() == value:
            return
        conn.execute(sa.delete(meta).where(meta.c.key == COMPAT_KEY))
        conn.execute(sa.insert(meta).values(key=COMPAT_KEY, value=value))


def migrate(url: str | URL | Engine, legacy_data_dir: Path | str | None = None, *,
            lock_timeout_s: float = LOCK_TIMEOUT_S, timeouts: Timeouts | None = None) -> MigrationResult:
    """Migrate to the head revision, then import legacy data (see legacy.py) if there is any left to import.

    A database ahead of this code is left as it is when it declares this code compatible (result.ahead), and
    refused with SchemaMismatch when not. legacy_data_dir: the previous version's DATA_DIR; needed only when the
    target is not the SQLite file in that directory (a SQLite target defaults to its own folder). Accepts a URL
    or an engine it then reuses."""
    engine = url if isinstance(url, Engine) else make_engine(url, timeouts)
    try:
        with migration_lock(engine, lock_timeout_s):
            before = current_revision(engine)
            script = _script()
            head = head_revision(script)
            if before is not None and before not in _known(script):
                _accept_ahead(engine, before, script)
                return MigrationResult(before, before, [], None, ahead=True)
            applied = [rev.revision for rev in reversed(list(script.iterate_revisions(head, before)))]
            if applied:
                log.info("migrating the database from %s to %s", before or "empty", head)
                with engine.connect() as conn, _unbounded_statements(conn):
                    command.upgrade(alembic_config(conn), "head")
            _record_compatibility(engine, oldest_compatible(head, script))
            legacy = import_legacy(engine, legacy_data_dir)
            return MigrationResult(before, head, applied, legacy)
    finally:
        if engine is not url:
            engine.dispose()


def downgrade(url: str | URL | Engine, revision: str, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> str | None:
    """Take the schema back to `revision` ("base": nothing) under the migration lock; returns the revision now.
    A revision whose downgrade would destroy data refuses (0001: trained models or job records present), and
    the transaction leaves the database as it was."""
    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        with migration_lock(engine, lock_timeout_s):
            with engine.connect() as conn, _unbounded_statements(conn):
                command.downgrade(alembic_config(conn), revision)
            now = current_revision(engine)
            if now is not None:
                _record_compatibility(engine, oldest_compatible(now))
            return now
    finally:
        if engine is not url:
            engine.dispose()


def prepare_schema(engine: Engine, mode: str, legacy_data_dir: Path | str | None = None, *,
                   lock_timeout_s: float = LOCK_TIMEOUT_S) -> MigrationResult:
    """What a server or worker does at start: `auto` migrates (one host, or the one place that migrates),
    `check` only checks (the cluster files migrate once, elsewhere)."""
    if mode == "auto":
        return migrate(engine, legacy_data_dir, lock_timeout_s=lock_timeout_s)
    if mode == "check":
        return check_schema(engine)
    raise ValueError(f"migrate mode {mode!r}: expected one of {', '.join(MODES)}")
