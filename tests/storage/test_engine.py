"""Engines from URLs: psycopg 3 for PostgreSQL, SQLite tuned for several threads and processes."""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from app.storage import StorageError, default_url, make_engine, normalize_url, sqlite_path


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


def test_sqlite_connections_are_configured(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'nested' / 'x.db'}")  # the folder is created
    try:
        with engine.connect() as conn:
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")}
        assert pragma == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 30000}
    finally:
        engine.dispose()


def test_postgresql_engine_pings_before_use(postgres_url):
    engine = make_engine(postgres_url)
    try:
        assert engine.pool._pre_ping and engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
