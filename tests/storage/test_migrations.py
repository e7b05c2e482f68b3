"""Migrations on both engines: from code (no alembic.ini), idempotent, once under concurrent starts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.storage import head_revision, make_engine, migrate
from app.storage.migrate import current_revision
from app.storage.schema import metadata

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"models", "active_model", "jobs", "storage_meta", "alembic_version", "aliases", "alias_history", "feedback"}


TABLES = {"models", "active_model", "jobs", "storage_meta", "feedback", "alembic_version"}

# Each process imports first, says so, and waits for "go" on stdin: once all are ready they call migrate() together.
MIGRATOR = """
import json, sys
from app.storage import migrate
print("ready", flush=True)
if sys.stdin.readline() == "go\\n":
    print(json.dumps(migrate(sys.argv[1]).applied))
"""


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrate_builds_the_schema_once(db_url):
    first = migrate(db_url)
    assert (first.before, first.after, first.applied, first.legacy) == (None, head_revision(), ["0001", "0002", "0003", "0004", "0005", "0006"],
                                                                         None)
    again = migrate(db_url)
    assert (again.before, again.applied) == (head_revision(), [])
    assert tables(db_url) >= TABLES
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:  # the active pointer's one row exists from the start
            assert conn.execute(sa.text("SELECT id, model_id, version FROM active_model")).all() == [(1, None, 0)]
    finally:
        engine.dispose()


def test_concurrent_starts_migrate_exactly_once(db_url):
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATOR, db_url], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    ready = [p.stdout.readline() for p in procs]
    if ready == ["ready\n"] * 3:
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
    outputs = [p.communicate(timeout=60) for p in procs]  # closes stdin: without "go", a process ends at once
    assert ready == ["ready\n"] * 3, [err for _, err in outputs]
    assert [p.returncode for p in procs] == [0] * 3, [err for _, err in outputs]
    applied = sorted(json.loads(out) for out, _ in outputs)
    assert applied == [[], [], ["0001", "0002", "0003", "0004", "0005", "0006"]]  # one process migrated; the others found it done
    assert tables(db_url) >= TABLES


CLI_AND_IMPORTS = """
import sys
from app.storage.__main__ import main
main(["migrate", "--url", sys.argv[1]])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("fastapi", "starlette", "torch", "model")
             or (m.startswith("app.") and not m.startswith("app.storage"))))
"""


def test_cli_migrates_and_the_package_stays_out_of_the_service(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = subprocess.run([sys.executable, "-c", CLI_AND_IMPORTS, url], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result, imported = done.stdout.strip().splitlines()
    assert json.loads(result)["applied"] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    assert imported == "[]"  # no HTTP layer, no service module, no torch just to migrate
    assert tables(url) >= TABLES


def schema_differences(url: str, target: sa.MetaData) -> list:
    """What Alembic's autogenerate would change to make the database match `target` (types and defaults too)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return compare_metadata(context, target)
    finally:
        engine.dispose()


def check_constraints(url: str) -> set[tuple[str, str]]:
    engine = make_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {(table, ck["name"]) for table in inspector.get_table_names() for ck in inspector.get_check_constraints(table)}
    finally:
        engine.dispose()


def test_the_migrations_build_exactly_the_schema_the_code_queries(db_url):
    """schema.py (what the stores query) and migrations/ (what creates the tables) are written apart; a table,
    column, type, default, index, unique or foreign key in one and not the other is a difference here, and so is
    a CHECK constraint's name (autogenerate does not compare those)."""
    migrate(db_url)
    assert schema_differences(db_url, metadata) == []
    assert check_constraints(db_url) == {(table.name, ck.name) for table in metadata.tables.values()
                                         for ck in table.constraints if isinstance(ck, sa.CheckConstraint)}
    widened = sa.MetaData()  # the comparison sees a difference when there is one
    for table in metadata.tables.values():
        table.to_metadata(widened)
    widened.tables["models"].append_column(sa.Column("added", sa.Integer))
    assert [diff[0] for diff in schema_differences(db_url, widened)] == ["add_column"]


def test_0002_adds_the_lease_token_and_handbacks_to_existing_jobs_and_goes_back(db_url):
    """A database at 0001 with a running job: 0002 keeps the row (no token: its next write fails, its lease expires
    and the job is requeued), with 0 hand-backs; the downgrade drops the columns and keeps the jobs."""
    from alembic.command import downgrade, upgrade

    from app.storage.migrate import alembic_config

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            upgrade(alembic_config(conn), "0001")
            conn.execute(sa.text(
                "INSERT INTO jobs (id, seq, status, config, progress, history, created_at, activated, attempt, "
                "max_attempts, lease_owner, lease_expires_at, cancel_requested) VALUES ('j', 1, 'running', '{}', "
                "'{}', '[]', '2026-01-01T00:00:00.000+00:00', false, 1, 2, 'w', '2026-01-01T00:00:15.000+00:00', "
                "false)"))
        assert migrate(db_url).applied == ["0002", "0003", "0004", "0005", "0006"]
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT id, status, lease_owner, lease_token, handbacks FROM jobs")).all() \
                == [("j", "running", "w", None, 0)]
        with engine.begin() as conn:
            downgrade(alembic_config(conn), "0001")
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT id, status FROM jobs")).all() == [("j", "running")]
        assert "handbacks" not in {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
    finally:
        engine.dispose()


def test_0003_records_the_active_model_as_productions_first_move_and_keeps_the_history_on_downgrade(db_url):
    """A database at 0002 whose pointer names a model: 0003 records it as production's first move (actor
    `migration`), so "what served at T" has an answer; the downgrade is refused once an alias exists or a move
    was recorded (code at 0002 runs on 0003 anyway), and goes through while there is only the seed."""
    from alembic.command import downgrade, upgrade

    from app.storage import DowngradeRefused, open_storage
    from app.storage.migrate import alembic_config

    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            upgrade(alembic_config(conn), "0002")
            conn.execute(sa.text("INSERT INTO models (id, source, path, sha256, created_at, info) VALUES ('a', "
                                 "'shipped', '/w/a.pt', 'x', '2026-01-01T00:00:00.000+00:00', '{}'), ('b', 'shipped', "
                                 "'/w/b.pt', 'y', '2026-01-01T00:00:00.000+00:00', '{}')"))
            conn.execute(sa.text("UPDATE active_model SET model_id = 'a', version = 3, "
                                 "changed_at = '2026-01-02T00:00:00.000+00:00'"))
        assert migrate(db_url).applied == ["0003", "0004", "0005", "0006"]
        store = open_storage(db_url, run_migrations=False)
        try:
            [seed] = store.aliases.history("production")
            assert (seed.generation, seed.model, seed.at, seed.actor) == (3, "a", "2026-01-02T00:00:00.000+00:00",
                                                                         "migration")
            with engine.begin() as conn:  # only the seed: nothing is lost by going back
                downgrade(alembic_config(conn), "0002")
            assert "aliases" not in sa.inspect(engine).get_table_names()
            assert migrate(db_url).applied == ["0003", "0004", "0005", "0006"]
            store.models.activate("b")  # production moves; previous names a
            with pytest.raises(DowngradeRefused, match="1 alias"), engine.begin() as conn:
                downgrade(alembic_config(conn), "0002")
            assert [m.model for m in store.aliases.history("production")] == ["b", "a"]
            assert store.aliases.get("previous").model == "a"
        finally:
            store.close()
    finally:
        engine.dispose()


def test_0004_adds_the_feedback_table_and_refuses_to_drop_recorded_feedback(db_url):
    """0004 only adds a table (code at 0002 and 0003 runs on it); going back drops it while empty, and refuses while it holds
    users' feedback, which lives nowhere else."""
    from alembic.command import downgrade

    from app.storage import DowngradeRefused
    from app.storage.migrate import alembic_config

    assert migrate(db_url).applied[-1] == "0006"
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            downgrade(alembic_config(conn), "0003")
        assert "feedback" not in tables(db_url)
        assert migrate(db_url).applied == ["0004", "0005", "0006"]
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO feedback (impression_id, model_id, prefix, k, suggestions, impression_at, received_at) "
                "VALUES ('i', 'default', '[7]', 3, 3, '2026-01-01T00:00:00.000+00:00', "
                "'2026-01-01T00:00:01.000+00:00')"))
        try:
            with engine.begin() as conn:
                downgrade(alembic_config(conn), "0003")
            raise AssertionError("the downgrade dropped recorded feedback")
        except DowngradeRefused as refused:
            assert "1 feedback event" in str(refused)
        assert current_revision(engine) == "0006" and "feedback" in tables(db_url)
    finally:
        engine.dispose()


def test_0005_adds_the_rollout_tables_and_refuses_to_drop_recorded_rollouts(db_url):
    """0005 only adds tables; going back drops them while no rollout was ever started, and refuses afterwards."""
    from alembic.command import downgrade

    from app.storage import DowngradeRefused
    from app.storage.migrate import alembic_config

    assert migrate(db_url).applied[-1] == "0006"
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            downgrade(alembic_config(conn), "0004")
        assert not {"rollouts", "rollout_decisions", "live_counters"} & set(tables(db_url))
        assert migrate(db_url).applied == ["0005", "0006"]
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO rollouts (id, alias, control, candidate, config, status, step, percent, shadow, "
                "started_at, step_started_at) VALUES ('r-1', 'production', 'default', 'alt', '{}', 'running', 0, 10, "
                "false, '2026-01-01T00:00:00.000+00:00', '2026-01-01T00:00:00.000+00:00')"))
        try:
            with engine.begin() as conn:
                downgrade(alembic_config(conn), "0004")
            raise AssertionError("the downgrade dropped a recorded rollout")
        except DowngradeRefused as refused:
            assert "1 rollout" in str(refused)
        assert current_revision(engine) == "0006" and "rollouts" in tables(db_url)
    finally:
        engine.dispose()


def test_0006_adds_the_learning_tables_and_refuses_to_drop_recorded_cycles(db_url):
    """0006 only adds tables; going back drops them while no cycle was ever started, and refuses afterwards."""
    from alembic.command import downgrade

    from app.storage import DowngradeRefused
    from app.storage.migrate import alembic_config

    assert migrate(db_url).applied[-1] == "0006"
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            downgrade(alembic_config(conn), "0005")
        assert not {"learning_policies", "learning_cycles"} & set(tables(db_url))
        assert migrate(db_url).applied == ["0006"]
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO learning_cycles (id, alias, number, \"trigger\", status, control, feedback_after, "
                "feedback_through, counts, data, created_at, updated_at) VALUES ('c-1', 'production', 1, 'manual', "
                "'training', 'default', 0, 10, '{}', '{}', '2026-01-01T00:00:00.000+00:00', "
                "'2026-01-01T00:00:00.000+00:00')"))
        try:
            with engine.begin() as conn:
                downgrade(alembic_config(conn), "0005")
            raise AssertionError("the downgrade dropped a recorded learning cycle")
        except DowngradeRefused as refused:
            assert "1 learning cycle" in str(refused)
        assert current_revision(engine) == "0006" and "learning_cycles" in tables(db_url)
    finally:
        engine.dispose()
