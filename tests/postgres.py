"""A real, throwaway PostgreSQL server for tests, and `poll`, the deadline-based wait every test should use.

    from tests.postgres import postgres_server, postgres_url   # in a conftest.py: the fixtures
    def test_x(postgres_url): ...                               # a fresh database per test

`postgres_server` (session scope) runs initdb and pg_ctl from Debian's /usr/lib/postgresql/*/bin (or PG_BIN)
in a private temporary directory (as the `postgres` user when the tests run as root, since PostgreSQL refuses
root), listening on a free 127.0.0.1 port with trust authentication and its unix socket inside that
directory. fsync and full_page_writes are off, which makes CREATE DATABASE cheap (commits still reach the OS,
so `restart()` keeps them). It is stopped with `pg_ctl stop -m immediate` and removed at the end. Without the binaries (`make postgres` installs them) the tests that need it skip, saying why.
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import free_port, poll  # noqa: F401  (poll: re-exported for the storage tests)

T = TypeVar("T")
SERVER_SETTINGS = ("fsync=off", "full_page_writes=off", "max_connections=200",
                   "shared_buffers=32MB")


def pg_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: $PG_BIN, else the newest /usr/lib/postgresql/N/bin, else PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    """One server; `url(db)`, `create_database()`, `drop_database(db)`, `restart()`, `stop()`."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="seq2seq-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._names = itertools.count(1)
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chmod(self.root, 0o700)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run("mkdir", "-p", str(self.socket_dir))

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        done = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr or done.stdout}\n{log}")
        return done

    def start(self) -> PostgresServer:
        if not self.data.exists():
            self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                      "--auth-local=trust", "--auth-host=trust", "--no-sync", "--no-instructions")
        options = " ".join([f"-p {self.port}", f"-k {self.socket_dir}", "-c listen_addresses=127.0.0.1",
                            *(f"-c {s}" for s in SERVER_SETTINGS)])
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "immediate") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """Stop (immediate: connections die as in a crash) and start again on the same port and data."""
        self.stop(mode)
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str | None = None, template: str = "template0") -> str:
        """A new database, empty or a copy of `template` (which nobody may be connected to); returns its URL.
        Copying a database that was migrated once is cheaper than migrating each new one."""
        name = name or f"t{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def cleanup(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """Start a server, or skip the calling test with the reason."""
    bin_dir = pg_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: run `make postgres`")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root needs a 'postgres' user to run the server (Debian's package creates it)")
    server = PostgresServer(bin_dir)
    try:
        return server.start()
    except BaseException:
        server.cleanup()
        raise


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database on the session's server, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])
