"""Engines from a database URL, and the transactions every store uses.

SQLite (one machine) and PostgreSQL (many machines) behave alike to callers: `write()` serializes writers
(SQLite: BEGIN IMMEDIATE, so a reader never has to upgrade its lock and hit SQLITE_BUSY mid-transaction;
PostgreSQL: row locks and advisory locks taken by the stores), `read()` sees one consistent snapshot.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from .errors import StorageError

BUSY_TIMEOUT_S = 30  # a writer waits this long for another process's write lock before giving up
CONNECT_TIMEOUT_S = 10  # PostgreSQL: an unreachable server fails a request instead of hanging it
DEFAULT_DB_NAME = "seq2seq.db"


def default_url(data_dir: Path | str) -> str:
    """The database used when SEQ2SEQ_DATABASE_URL is unset: a SQLite file in the data directory."""
    return f"sqlite:///{Path(data_dir).resolve() / DEFAULT_DB_NAME}"


def normalize_url(url: str | URL) -> URL:
    """`postgresql://` and `postgres://` mean psycopg 3; `sqlite://` stays on the standard library's driver."""
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    raise StorageError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
                       "use sqlite:///PATH or postgresql://USER:PASS@HOST:PORT/DB")


def sqlite_path(url: str | URL) -> Path | None:
    """The file behind a SQLite URL; None for PostgreSQL or an in-memory database."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


def make_engine(url: str | URL, **kwargs) -> Engine:
    """An engine configured for this service's access pattern; extra keyword arguments go to create_engine."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        # pre_ping: a pooled connection to a PostgreSQL that restarted is replaced on checkout, not handed out dead.
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
        return sa.create_engine(parsed, **kwargs)
    path = sqlite_path(parsed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", BUSY_TIMEOUT_S)
    connect_args.setdefault("check_same_thread", False)
    engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: sqlite3.Connection, record) -> None:
        # Let SQLAlchemy's begin() decide when a transaction starts (the driver's own guess defers BEGIN and
        # breaks SAVEPOINT and BEGIN IMMEDIATE); see SQLAlchemy's "Serializable isolation / Savepoints" recipe.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # WAL: readers never block the writer. NORMAL: commits are atomic and survive a crash of the process;
        # only a power cut can lose the last ones, and FULL would fsync on every commit.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any exception."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """One read transaction; the stores read with single statements, which see one consistent snapshot."""
    with engine.connect() as conn, conn.begin():
        yield conn
