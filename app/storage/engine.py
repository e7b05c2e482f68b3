"""Engines from a database URL, and the transactions every store uses.

SQLite (one machine) and PostgreSQL (many machines) behave alike to callers: `write()` serializes writers
(SQLite: BEGIN IMMEDIATE, so a reader never has to upgrade its lock and hit SQLITE_BUSY mid-transaction;
PostgreSQL: row locks and advisory locks taken by the stores), `read()` sees one consistent snapshot.

Every wait is bounded (`Timeouts`): after a PostgreSQL failover a pooled connection to the old primary is
found dead by TCP keepalives and tcp_user_timeout within seconds instead of the kernel's ~15 minutes of
retransmissions, a statement or lock wait that outlives its timeout is cancelled by the server, and the
pool recycles connections every half hour. A SQLite writer waits at most the lock timeout for another writer of
its process, then at most as long again for one of another process.

SQLite writers in one process queue on a lock per database file before BEGIN IMMEDIATE. Without it, a writer
that finds another connection of the same process mid-transaction (the live counters' flush, a feedback group,
a job's heartbeat) gets SQLITE_BUSY and sleeps on SQLite's busy-handler schedule (1, 2, 5, 10, 15, 20, 25 ms ...),
so a 2 ms wait became 50 ms at the tail; on the lock it wakes as soon as the other commits. Other processes on
the same file still meet the busy timeout.
"""
from __future__ import annotations

import math
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from .errors import StorageError
from .filesystems import refuse_network_filesystem

DEFAULT_DB_NAME = "seq2seq.db"
POOL_RECYCLE_S = 1800  # PostgreSQL: a connection older than this is replaced at checkout (a moved primary)


@dataclass(frozen=True)
class Timeouts:
    """How long the database may make a caller wait; the defaults are the settings' defaults."""

    connect_s: float = 10.0    # PostgreSQL: opening a connection (libpq rounds up to whole seconds, at least 2)
    statement_s: float = 30.0  # PostgreSQL: one statement; 0 = none (migrations run without one)
    lock_s: float = 10.0       # PostgreSQL lock_timeout; SQLite busy_timeout (waiting for another writer)
    tcp_s: float = 20.0        # PostgreSQL: a peer silent this long is dead (keepalives, tcp_user_timeout)

    def libpq_params(self) -> dict[str, str]:
        """libpq connection parameters: all but `options` go into the URL, so a raw psycopg.connect on the
        rendered URL (the watcher's LISTEN connection) gets the keepalives too."""
        tcp = max(3, int(self.tcp_s))
        idle, interval, count = max(1, tcp // 2), max(1, tcp // 6), 3  # first probe after half the silence budget
        # The server gets the same keepalives (-c tcp_*), so it, too, drops a vanished client and its locks.
        server = {"statement_timeout": int(self.statement_s * 1000), "lock_timeout": int(self.lock_s * 1000),
                  "tcp_keepalives_idle": idle, "tcp_keepalives_interval": interval, "tcp_keepalives_count": count,
                  "tcp_user_timeout": tcp * 1000}
        return {
            "connect_timeout": str(max(2, math.ceil(self.connect_s))),
            "keepalives": "1",
            "keepalives_idle": str(idle),
            "keepalives_interval": str(interval),
            "keepalives_count": str(count),
            "tcp_user_timeout": str(tcp * 1000),  # data sent and not acknowledged for the budget: give up
            "options": " ".join(f"-c {name}={value}" for name, value in server.items()),
        }


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


def postgres_connect(parsed: URL, timeouts: Timeouts) -> tuple[URL, dict[str, str]]:
    """The URL with the timeouts' libpq parameters added, and the server `options` apart (as a connect
    argument: rendered into a URL its spaces would become '+', which libpq does not decode, and the watcher's
    LISTEN connection is opened from the rendered URL). Parameters the URL names keep its values; an
    `options` of its own comes after ours, so its -c settings win."""
    params = timeouts.libpq_params()
    options = params.pop("options")
    query = dict(parsed.query)
    given = query.pop("options", None)
    if given:
        options = f"{options} {given if isinstance(given, str) else ' '.join(given)}"
    url = parsed.set(query={**{k: v for k, v in params.items() if k not in query}, **query})
    return url, {"options": options}


def make_engine(url: str | URL, timeouts: Timeouts | None = None, **kwargs) -> Engine:
    """An engine configured for this service's access pattern; extra keyword arguments go to create_engine.

    A SQLite file on a network filesystem is refused (UnsupportedLocation): SQLite is single-host."""
    timeouts = timeouts or Timeouts()
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        # pre_ping: a pooled connection to a PostgreSQL that restarted is replaced on checkout, not handed out dead.
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_recycle", POOL_RECYCLE_S)
        kwargs.setdefault("pool_timeout", max(timeouts.connect_s, 1.0))
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
        url_with, server_options = postgres_connect(parsed, timeouts)
        kwargs["connect_args"] = {**server_options, **kwargs.get("connect_args", {})}
        return sa.create_engine(url_with, **kwargs)
    path = sqlite_path(parsed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        refuse_network_filesystem(path)
    connect_args: dict[str, object] = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("timeout", timeouts.lock_s)
    connect_args.setdefault("check_same_thread", False)
    engine = sa.create_engine(parsed, connect_args=connect_args, **kwargs)
    _configure_sqlite(engine, timeouts.lock_s)
    _WRITERS[engine] = _writer_lock(path), timeouts.lock_s
    return engine


_WRITERS: weakref.WeakKeyDictionary[Engine, tuple[threading.RLock, float]] = weakref.WeakKeyDictionary()
_FILE_LOCKS: dict[Path, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _writer_lock(path: Path | None) -> threading.RLock:
    """One lock per database file for every engine on it in this process (in memory: the engine's own)."""
    if path is None:
        return threading.RLock()
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path.resolve(), threading.RLock())


def _configure_sqlite(engine: Engine, busy_timeout_s: float) -> None:
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
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any exception."""
    with queued_writer(engine), engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


@contextmanager
def queued_writer(engine: Engine, timeout_s: float | None = None) -> Iterator[None]:
    """Held around a SQLite write transaction: this process's lock for the engine's file, waited for at most
    timeout_s (None: the engine's lock timeout); nothing for PostgreSQL."""
    writer = _WRITERS.get(engine)
    if writer is None:
        yield
        return
    lock, lock_s = writer
    if not lock.acquire(timeout=lock_s if timeout_s is None else timeout_s):
        # What SQLite itself raises when its busy timeout runs out, so callers treat both alike (errors.transient).
        raise sa.exc.OperationalError("BEGIN IMMEDIATE", None,
                                      sqlite3.OperationalError("database is locked (by this process's writer)"))
    try:
        yield
    finally:
        lock.release()


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """One read transaction; the stores read with single statements, which see one consistent snapshot."""
    with engine.connect() as conn, conn.begin():
        yield conn
