"""Migrations on both engines: from code (no alembic.ini), idempotent, once under concurrent starts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from app.storage import head_revision, make_engine, migrate
from app.storage.migrate import current_revision

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"models", "active_model", "jobs", "storage_meta", "alembic_version"}

# Each process imports first, then waits for the go file, so that they all call migrate() at the same moment.
MIGRATOR = """
import json, os, sys, time
from app.storage import migrate
deadline = time.monotonic() + 30
while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.005)
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
    assert (first.before, first.after, first.applied, first.legacy) == (None, head_revision(), ["0001"], None)
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


def test_concurrent_starts_migrate_exactly_once(db_url, tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATOR, db_url, str(go)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [err for _, err in outputs]
    applied = sorted(json.loads(out) for out, _ in outputs)
    assert applied == [[], [], ["0001"]]  # one process migrated; the others found it done
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
    assert json.loads(result)["applied"] == ["0001"]
    assert imported == "[]"  # no HTTP layer, no service module, no torch just to migrate
    assert tables(url) >= TABLES
