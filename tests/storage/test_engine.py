"""Engines from URLs: psycopg 3 for PostgreSQL with every wait bounded, SQLite tuned for several threads and
processes and refused on a network filesystem."""
from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from app.storage import (
    StorageError,
    Timeouts,
    UnsupportedLocation,
    default_url,
    make_engine,
    normalize_url,
    sqlite_path,
    transient,
)
from app.storage.engine import read, write
from app.storage.filesystems import filesystem_type, refuse_network_filesystem


def test_urls_pick_the_driver():
    assert normalize_url("postgresql://u:p@h:5432/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:////data/x.db").drivername == "sqlite+pysqlite"
    assert default_url(Path("/srv/data")) == "sqlite:////srv/data/seq2seq.db"
    assert sqlite_path("sqlite:////srv/data/seq2seq.db") == Path("/srv/data/seq2seq.db")
    assert sqlite_path("postgresql://u@h/db") is None


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "http://example.com"])
def test_unsupported_urls_are_refused(bad):
    with pytest.raises(StorageError, match="unsupported database URL"):
        make_engine(bad)


@pytest.mark.parametrize("lock_s", [None, 2.5])
def test_sqlite_connections_are_configured(tmp_path, lock_s):
    timeouts = Timeouts() if lock_s is None else Timeouts(lock_s=lock_s)
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'x.db'}", timeouts)  # the folder is created
    try:
        with engine.connect() as conn:
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
        # the busy timeout is the lock timeout: 10 s by default, shorter than a job's 15 s lease
        busy = 10000 if lock_s is None else 2500
        assert pragma == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": busy}
    finally:
        engine.dispose()


def test_sqlite_writers_in_one_process_queue_on_the_file_not_on_sqlites_busy_handler(tmp_path):
    """Two engines on one file (a store's and a lane's): the second writer waits on the process's lock for that
    file, never reaching BEGIN IMMEDIATE while the first holds it, and gives up after the lock timeout with the
    error SQLite itself would raise; an engine on another file is not held up."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    first, second = make_engine(url), make_engine(url, Timeouts(lock_s=0.2))
    elsewhere = make_engine(f"sqlite:///{tmp_path / 'y.db'}", Timeouts(lock_s=0.2))
    begun: list[str] = []
    sa.event.listen(second, "begin", lambda conn: begun.append("second"))
    try:
        with write(first) as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with write(first) as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            failed: list[BaseException] = []
            thread = threading.Thread(target=lambda: _write_or_record(second, failed))
            thread.start()
            thread.join(timeout=30)
            assert not thread.is_alive()
            assert len(failed) == 1 and isinstance(failed[0], sa.exc.OperationalError)
            assert "by this process's writer" in str(failed[0]) and transient(failed[0])
            assert begun == []  # it never opened a transaction, so it never met SQLite's busy handler
            with write(elsewhere) as other:  # another file: its own lock
                other.exec_driver_sql("CREATE TABLE u (x INTEGER)")
        with write(second) as conn:  # the first committed: the second writes at once
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert begun == ["second"]
        with read(first) as conn:
            assert conn.exec_driver_sql("SELECT x FROM t ORDER BY x").scalars().all() == [1, 2]
    finally:
        for engine in (first, second, elsewhere):
            engine.dispose()


def _write_or_record(engine: sa.engine.Engine, failed: list[BaseException]) -> None:
    try:
        with write(engine) as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (3)")
    except Exception as exc:
        failed.append(exc)


def test_postgresql_engine_pings_before_use(postgres_url):
    engine = make_engine(postgres_url)
    try:
        assert engine.pool._pre_ping and engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def _show(conn, name: str) -> str:
    return conn.exec_driver_sql(f"SHOW {name}").scalar()


def test_postgresql_connections_carry_the_timeouts(postgres_url):
    engine = make_engine(postgres_url, Timeouts(connect_s=3, statement_s=1.5, lock_s=0.5, tcp_s=12))
    try:
        with engine.connect() as conn:
            settings = {name: _show(conn, name) for name in
                        ("statement_timeout", "lock_timeout", "tcp_keepalives_idle", "tcp_keepalives_interval",
                         "tcp_keepalives_count", "tcp_user_timeout")}
            info = conn.connection.dbapi_connection.info
            client = info.get_parameters()
        # the server's side of the socket gets the same keepalives (SHOW reads its socket; tcp_user_timeout in ms)
        assert settings == {"statement_timeout": "1500ms", "lock_timeout": "500ms", "tcp_keepalives_idle": "6",
                            "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3", "tcp_user_timeout": "12000"}
        assert (client["connect_timeout"], client["keepalives"], client["tcp_user_timeout"]) == ("3", "1", "12000")
        assert engine.pool._recycle == 1800
    finally:
        engine.dispose()


def test_a_url_option_of_its_own_wins(postgres_url):
    engine = make_engine(postgres_url + "?options=-c%20statement_timeout%3D7s&keepalives_idle=9")
    try:
        with engine.connect() as conn:
            assert (_show(conn, "statement_timeout"), _show(conn, "lock_timeout")) == ("7s", "10s")
            assert conn.connection.dbapi_connection.info.get_parameters()["keepalives_idle"] == "9"
    finally:
        engine.dispose()


def test_a_statement_past_the_statement_timeout_is_cancelled(postgres_url):
    engine = make_engine(postgres_url, Timeouts(statement_s=0.3))
    try:
        with engine.connect() as conn, pytest.raises(sa.exc.OperationalError) as caught:
            conn.execute(sa.text("SELECT pg_sleep(30)"))
        assert isinstance(caught.value.orig, psycopg.errors.QueryCanceled)
        assert "statement timeout" in str(caught.value.orig)
        with engine.connect() as conn:  # the pool hands out a working connection afterwards
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_a_lock_wait_is_bounded_by_the_lock_timeout(postgres_url):
    engine = make_engine(postgres_url, Timeouts(lock_s=0.3))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE pointer (id int PRIMARY KEY, v int)"))
            conn.execute(sa.text("INSERT INTO pointer VALUES (1, 0)"))
        holder = engine.connect()
        holder.begin()
        holder.execute(sa.text("SELECT v FROM pointer WHERE id = 1 FOR UPDATE"))  # held, as a stuck writer would
        outcome: list = []

        def wait_for_it() -> None:
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text("UPDATE pointer SET v = 1 WHERE id = 1"))
                outcome.append("updated")
            except sa.exc.OperationalError as exc:
                outcome.append(exc.orig)

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        waiter.join(timeout=30)  # a bound for the test only: the lock timeout ends the wait long before
        holder.rollback()
        holder.close()
        assert not waiter.is_alive()
        [error] = outcome
        assert isinstance(error, psycopg.errors.LockNotAvailable) and "lock timeout" in str(error)
    finally:
        engine.dispose()


# --- SQLite is single-host: no network filesystem ---------------------------------------------------------------

MOUNTINFO = r"""22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
25 22 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 22 0:27 / /srv rw,relatime shared:20 - tmpfs tmpfs rw,size=65536k
40 31 0:35 / /srv/shared rw,relatime shared:30 - nfs4 fileserver:/export/data rw,vers=4.2,addr=10.0.0.5
41 31 0:36 / /srv/my\040data rw,relatime shared:31 master:5 - cifs //nas/share rw,vers=3.0
42 22 0:37 / /home/me/remote rw,nosuid,nodev,relatime shared:32 - fuse.sshfs me@host:/data rw,user_id=1000
43 40 253:2 / /srv/shared/local rw,relatime shared:33 - xfs /dev/vdb1 rw
44 31 0:38 / /srv/stacked rw,relatime shared:34 - nfs host:/a rw
45 31 253:3 / /srv/stacked rw,relatime shared:35 - ext4 /dev/vdc1 rw
"""


@pytest.mark.parametrize(("path", "fstype"), [
    ("/srv/shared/seq2seq.db", "nfs4"),
    ("/srv/shared/deeper/still/seq2seq.db", "nfs4"),
    ("/srv/shared/local/seq2seq.db", "xfs"),        # a local disk mounted inside the NFS share
    ("/srv/my data/seq2seq.db", "cifs"),            # \040 in mountinfo is a space
    ("/srv/my/seq2seq.db", "tmpfs"),                # a prefix of the string, not of the path
    ("/home/me/remote/db/x.db", "fuse.sshfs"),
    ("/srv/stacked/x.db", "ext4"),                  # the later of two mounts on one point hides the first
    ("/var/lib/seq2seq.db", "ext4"),
])
def test_the_filesystem_of_a_path_is_read_from_mountinfo(path, fstype):
    assert filesystem_type(path, MOUNTINFO) == fstype


@pytest.mark.parametrize("path", ["/srv/shared/seq2seq.db", "/srv/my data/seq2seq.db", "/home/me/remote/x.db"])
def test_a_sqlite_file_on_a_network_filesystem_is_refused(path):
    with pytest.raises(UnsupportedLocation) as refused:
        refuse_network_filesystem(Path(path), MOUNTINFO)
    message = str(refused.value)
    assert path in message and "single-host" in message and "postgresql://" in message


@pytest.mark.parametrize("path", ["/srv/shared/local/x.db", "/srv/stacked/x.db", "/var/lib/x.db"])
def test_a_sqlite_file_on_a_local_filesystem_is_accepted(path):
    refuse_network_filesystem(Path(path), MOUNTINFO)


@pytest.mark.skipif(shutil.which("findmnt") is None or not Path("/proc/self/mountinfo").exists(),
                    reason="needs Linux's /proc/self/mountinfo and util-linux's findmnt")
def test_the_real_mount_table_gives_the_type_findmnt_gives(tmp_path):
    for path in (tmp_path, Path.cwd(), Path("/proc/self")):
        expected = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()
        assert filesystem_type(path) == expected
    assert filesystem_type(tmp_path / "not-yet" / "seq2seq.db") == filesystem_type(tmp_path)
    engine = make_engine(f"sqlite:///{tmp_path / 'local.db'}")  # a local disk passes the check
    engine.dispose()


def test_make_engine_refuses_the_sqlite_file_where_the_mount_table_says_nfs(tmp_path, monkeypatch):
    from app.storage import filesystems

    table = tmp_path / "mountinfo"  # the machine's own table, with the test's folder mounted over NFS
    table.write_text(Path("/proc/self/mountinfo").read_text()
                     + f"99 22 0:99 / {tmp_path / 'share'} rw,relatime - nfs4 fileserver:/export rw\n")
    monkeypatch.setattr(filesystems, "MOUNTINFO", table)
    with pytest.raises(UnsupportedLocation, match="single-host"):
        make_engine(f"sqlite:///{tmp_path / 'share' / 'data' / 'seq2seq.db'}")
    make_engine(f"sqlite:///{tmp_path / 'elsewhere' / 'seq2seq.db'}").dispose()


def test_a_connection_opened_from_the_rendered_url_gets_the_keepalives(postgres_url):
    """What the watcher does for LISTEN: psycopg.connect on the engine's URL rendered as a string."""
    engine = make_engine(postgres_url, Timeouts(tcp_s=12))
    try:
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            params = conn.info.get_parameters()
            assert (params["keepalives"], params["keepalives_idle"], params["tcp_user_timeout"]) == ("1", "6", "12000")
            conn.execute("LISTEN x")
    finally:
        engine.dispose()
