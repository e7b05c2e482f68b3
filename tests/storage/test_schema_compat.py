"""Rollouts and rollbacks against the schema, on both engines: `check` mode migrates nothing, an older version
runs on a newer schema only when that schema declares it compatible, the migration lock is waited for a bounded
time, and a downgrade that would drop trained models is refused."""
from __future__ import annotations

import fcntl
import json

import psycopg
import pytest
import sqlalchemy as sa

from app.storage import (
    DowngradeRefused,
    MigrationLockTimeout,
    SchemaMismatch,
    check_schema,
    downgrade,
    head_revision,
    make_engine,
    migrate,
    open_storage,
    sqlite_path,
)
from app.storage.__main__ import main as storage_cli
from app.storage.migrate import COMPAT_KEY, MIGRATION_LOCK_KEY, current_revision, recorded_compatibility
from tests.storage.helpers import register

NEWER = "0099"  # a revision this code has never heard of: what a newer image would have migrated to


def stamp(url: str, revision: str, compatible_with: str | None) -> None:
    """Make the database look migrated by a newer version: its revision, and what it declared compatible."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
            conn.execute(sa.text("DELETE FROM storage_meta WHERE key = :k"), {"k": COMPAT_KEY})
            if compatible_with is not None:
                conn.execute(sa.text("INSERT INTO storage_meta (key, value) VALUES (:k, :v)"),
                             {"k": COMPAT_KEY, "v": compatible_with})
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def test_a_migration_records_the_oldest_compatible_revision(storage_url):
    engine = make_engine(storage_url)
    try:
        assert head_revision() == "0006"
        assert recorded_compatibility(engine) == "0002"  # 0006 declares code at 0002 compatible
        assert check_schema(engine).after == head_revision()
    finally:
        engine.dispose()


def test_check_mode_refuses_an_unmigrated_database_and_creates_nothing(db_url):
    with pytest.raises(SchemaMismatch) as refused:
        open_storage(db_url, migrate_mode="check")
    assert "no schema yet" in str(refused.value) and "python -m app migrate" in str(refused.value)
    assert revision_of(db_url) is None  # nothing was migrated
    open_storage(db_url, migrate_mode="auto").close()  # auto migrates it
    open_storage(db_url, migrate_mode="check").close()  # and check then accepts it


def test_an_older_version_runs_on_a_newer_schema_that_declares_it_compatible(storage_url, checkpoints):
    stamp(storage_url, NEWER, compatible_with="0001")
    for mode in ("check", "auto"):
        storage = open_storage(storage_url, migrate_mode=mode)  # no ResolutionError, no crash loop
        try:
            register(storage, f"m-{mode}", checkpoints[0])
            assert f"m-{mode}" in {m.id for m in storage.models.list()}
        finally:
            storage.close()
    result = migrate(storage_url)  # `python -m app migrate` of the older image: nothing to do, and says so
    assert (result.before, result.after, result.applied, result.ahead) == (NEWER, NEWER, [], True)
    assert revision_of(storage_url) == NEWER  # left as the newer version wrote it


@pytest.mark.parametrize("declared", [None, NEWER, "0042"], ids=["nothing", "itself", "unknown"])
def test_an_older_version_refuses_a_newer_schema_that_does_not(storage_url, declared):
    stamp(storage_url, NEWER, compatible_with=declared)
    for mode in ("check", "auto"):
        with pytest.raises(SchemaMismatch) as refused:
            open_storage(storage_url, migrate_mode=mode)
        message = str(refused.value)
        assert f"revision {NEWER}" in message and f"its latest is {head_revision()}" in message
        assert "deploy the newer image" in message
    assert revision_of(storage_url) == NEWER


def test_the_cli_says_why_it_will_not_migrate(storage_url, capsys):
    stamp(storage_url, NEWER, compatible_with=None)
    assert storage_cli(["migrate", "--url", storage_url]) == 1
    assert f"revision {NEWER}" in capsys.readouterr().err
    stamp(storage_url, NEWER, compatible_with="0001")
    assert storage_cli(["migrate", "--url", storage_url]) == 0
    assert json.loads(capsys.readouterr().out)["ahead"] is True


def test_a_held_migration_lock_is_waited_for_a_bounded_time(db_url):
    path = sqlite_path(db_url)
    if path is None:  # another process's session holding the advisory lock
        holder = psycopg.connect(db_url, autocommit=True)
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        release = holder.close
    else:  # another open file description holding the flock
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(path.with_name(path.name + ".migrate-lock"), "a+b")  # noqa: SIM115
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        release = lock_file.close
    try:
        with pytest.raises(MigrationLockTimeout, match=r"held the migration lock .* for more than 0\.5 s"):
            migrate(db_url, lock_timeout_s=0.5)
        assert revision_of(db_url) is None
    finally:
        release()
    assert migrate(db_url, lock_timeout_s=0.5).applied == ["0001", "0002", "0003", "0004", "0005", "0006"]  # once released, it goes through


def test_a_downgrade_that_would_drop_trained_models_is_refused(storage_url, checkpoints):
    storage = open_storage(storage_url, run_migrations=False)
    try:
        register(storage, "m-precious", checkpoints[1])
    finally:
        storage.close()
    with pytest.raises(DowngradeRefused, match="1 trained model"):
        downgrade(storage_url, "base")
    assert revision_of(storage_url) == head_revision()  # nothing changed: the model and its bytes are still there
    storage = open_storage(storage_url, migrate_mode="check")
    try:
        assert storage.models.checkpoint_bytes("m-precious") == checkpoints[1].blob
        storage.models.delete("m-precious")
    finally:
        storage.close()
    assert downgrade(storage_url, "base") is None  # with no trained model and no job, nothing is lost
    assert revision_of(storage_url) is None


def test_a_server_of_the_older_version_starts_on_a_compatible_schema_and_refuses_another(make_server, tmp_path):
    data = tmp_path / "data"
    url = f"sqlite:///{data / 'seq2seq.db'}"
    migrate(url)
    stamp(url, NEWER, compatible_with=None)
    refused = make_server(data, SEQ2SEQ_MIGRATE="check")
    with pytest.raises(RuntimeError, match="server exited") as exited:
        refused.start()
    assert f"SchemaMismatch: the database schema is at revision {NEWER}" in str(exited.value)
    stamp(url, NEWER, compatible_with="0001")
    server = make_server(data, SEQ2SEQ_MIGRATE="check").start()
    server.wait_ready()
    with server.client() as c:
        assert c.post("/predict", json={"start": 7}).json()["model"] == "default"
    assert revision_of(url) == NEWER
