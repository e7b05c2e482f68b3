"""The previous version's data (app/db.py's SQLite file, DATA_DIR/models/*.pt with .sha256 manifests, the
active pointer in `state`, queued job bodies in DATA_DIR/jobs/) survives the move to the new storage: into the
same SQLite file, or into PostgreSQL. Nothing is lost, and importing again changes nothing."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

from app.storage import migrate, open_storage, sqlite_path
from model import checkpoint

ROOT = Path(__file__).resolve().parents[2]

LEGACY_COMMIT = "2f77016"
# app/db.py's SCHEMA as of commit 2f77016, the last version that wrote this format (app/db.py is gone since),
# with the rows written the way its Registry.register / sync_shipped and JobManager did.
LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (id TEXT PRIMARY KEY, source TEXT NOT NULL, path TEXT NOT NULL,
    sha256 TEXT NOT NULL, created_at TEXT NOT NULL, info TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, status TEXT NOT NULL, config TEXT NOT NULL,
    progress TEXT NOT NULL, history TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
    error TEXT, model_id TEXT, activated INTEGER NOT NULL DEFAULT 0, activation_reason TEXT);
"""


def legacy_database_class():
    """app/db.py's Database from the last commit that had it, when git history is at hand (not in a shallow
    clone or an image without .git); the file is then created by the old code itself."""
    try:
        source = subprocess.run(["git", "show", f"{LEGACY_COMMIT}:app/db.py"], cwd=ROOT, capture_output=True,
                                text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    namespace: dict = {"__name__": "legacy_db"}
    exec(compile(source, "legacy app/db.py", "exec"), namespace)
    return namespace["Database"]


def open_legacy_db(path: Path) -> sqlite3.Connection:
    database = legacy_database_class()
    if database is not None:
        database(path).close()  # the old code makes the file: WAL, its schema
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(LEGACY_SCHEMA)  # a no-op after the old code ran; the frozen copy when it could not
    return conn


def build_legacy_data_dir(data_dir: Path, checkpoints) -> dict:
    """What the previous version leaves behind after a shipped model, two trained ones and five jobs."""
    models_dir, jobs_dir = data_dir / "models", data_dir / "jobs"
    models_dir.mkdir(parents=True)
    jobs_dir.mkdir()
    db = open_legacy_db(data_dir / "seq2seq.db")
    shipped = ROOT / "weights" / "default.pt"
    default = checkpoint.load(shipped)
    db.execute("INSERT INTO models VALUES ('default', 'shipped', ?, ?, ?, ?)",
               (str(shipped), default.sha256, default.created_at, json.dumps({"name": "default"})))
    trained = {}
    for i, model_id in enumerate(("m-20260101-000000-aaaaaa", "m-20260102-000000-bbbbbb")):
        path = models_dir / f"{model_id}.pt"
        path.write_bytes(checkpoints[i].blob)  # as the worker wrote it, manifest beside it
        checkpoint.manifest_path(path).write_text(f"{checkpoints[i].sha256}  {path.name}\n")
        db.execute("INSERT INTO models VALUES (?, 'trained', ?, ?, ?, ?)",
                   (model_id, str(path), checkpoints[i].sha256, checkpoints[i].created_at,
                    json.dumps(checkpoints[i].info)))
        trained[model_id] = checkpoints[i].blob
    db.execute("INSERT INTO state VALUES ('active_model', 'm-20260102-000000-bbbbbb')")
    jobs = {
        "job-1": ("succeeded", "m-20260101-000000-aaaaaa", 1, "activated: always", None),
        "job-2": ("failed", "m-x2", 0, None, "the training process exited with status 1"),
        "job-3": ("cancelled", "m-x3", 0, None, None),
        "job-4": ("running", "m-x4", 0, None, None),
        "job-5": ("queued", "m-x5", 0, None, None),
    }
    for seq, (job_id, (status, model_id, activated, reason, error)) in enumerate(jobs.items(), start=1):
        started = None if status == "queued" else f"2026-01-0{seq}T00:00:01.000+00:00"
        finished = f"2026-01-0{seq}T00:00:09.000+00:00" if status in ("succeeded", "failed", "cancelled") else None
        db.execute("INSERT INTO jobs(id, seq, status, config, progress, history, created_at, started_at, finished_at, "
                   "error, model_id, activated, activation_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (job_id, seq, status, json.dumps({"name": job_id}), json.dumps({"step": seq}),
                    json.dumps([{"step": seq, "loss": 1.0 / seq}]), f"2026-01-0{seq}T00:00:00.000+00:00", started,
                    finished, error, model_id, activated, reason))
    (jobs_dir / "job-5.json").write_text(json.dumps({"dataset": {"generator": "random"}, "name": "job-5"}))
    db.close()
    return {"trained": trained, "jobs": jobs, "default_sha": default.sha256}


def legacy_dir_for(db_url: str, tmp_path: Path) -> Path:
    path = sqlite_path(db_url)
    return path.parent if path is not None else tmp_path / "legacy-data"  # SQLite: the very same file


def test_legacy_data_is_imported_without_loss(db_url, tmp_path, checkpoints):
    data_dir = legacy_dir_for(db_url, tmp_path)
    legacy = build_legacy_data_dir(data_dir, checkpoints)
    storage = open_storage(db_url, legacy_data_dir=data_dir)
    try:
        models = {m.id: m for m in storage.models.list()}
        assert set(models) == {"default", *legacy["trained"]}
        assert (models["default"].source, models["default"].path) == ("shipped", str(ROOT / "weights/default.pt"))
        assert models["default"].sha256 == legacy["default_sha"]
        for model_id, blob in legacy["trained"].items():
            assert storage.models.checkpoint_bytes(model_id) == blob
            assert models[model_id].source == "trained"
        assert models["m-20260101-000000-aaaaaa"].info.model_dump(exclude_unset=True) == checkpoints[0].info
        assert storage.models.active() == ("m-20260102-000000-bbbbbb", 1)

        jobs = {j.id: j for j in storage.jobs.list()}
        assert [j.id for j in storage.jobs.list()] == ["job-5", "job-4", "job-3", "job-2", "job-1"]
        for seq, (job_id, (status, model_id, activated, reason, error)) in enumerate(legacy["jobs"].items(), 1):
            job = jobs[job_id]
            assert (job.seq, job.model_id, job.activated, job.activation_reason) == (
                seq, model_id, bool(activated), reason)
            assert (job.config, job.progress, job.history) == (
                {"name": job_id}, {"step": seq}, [{"step": seq, "loss": 1.0 / seq}])
            if status != "running":
                assert (job.status, job.error) == (status, error)
        assert (jobs["job-4"].status, jobs["job-4"].error) == ("failed", "interrupted")
        assert jobs["job-4"].finished_at is not None
        claimed = storage.jobs.claim("w", "host", 1, lease_s=30)  # the queued job is still runnable
        assert claimed is not None and claimed.id == "job-5" and storage.jobs.body("job-5")["name"] == "job-5"
    finally:
        storage.close()


def test_importing_again_changes_nothing(db_url, tmp_path, checkpoints):
    data_dir = legacy_dir_for(db_url, tmp_path)
    build_legacy_data_dir(data_dir, checkpoints)
    storage = open_storage(db_url, legacy_data_dir=data_dir)
    try:
        storage.models.activate("default")
        storage.models.delete("m-20260101-000000-aaaaaa")
        storage.jobs.purge_finished(keep=0)
        before = (storage.models.list(), storage.models.active(), storage.jobs.list())
        again = open_storage(db_url, legacy_data_dir=data_dir)  # the next start: the marker says it is done
        assert (again.models.list(), again.models.active(), again.jobs.list()) == before
        again.close()
    finally:
        storage.close()


def test_a_damaged_checkpoint_is_reported_and_the_rest_imported(db_url, tmp_path, checkpoints):
    data_dir = legacy_dir_for(db_url, tmp_path)
    build_legacy_data_dir(data_dir, checkpoints)
    damaged = data_dir / "models" / "m-20260101-000000-aaaaaa.pt"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    if sqlite_path(db_url) is None:  # the data directory moved since the old version wrote its absolute paths
        relocated = tmp_path / "moved-data"
        shutil.move(data_dir, relocated)
        data_dir = relocated
    result = migrate(db_url, legacy_data_dir=data_dir)
    assert result.legacy.models == ["default", "m-20260102-000000-bbbbbb"]
    assert [what for what, _ in result.legacy.skipped] == ["model m-20260101-000000-aaaaaa"]
    assert "SHA-256" in result.legacy.skipped[0][1]
    assert len(result.legacy.jobs) == 5 and result.legacy.active == "m-20260102-000000-bbbbbb"
    assert sorted(p.name for p in (data_dir / "models").iterdir()) == [  # the old files are left in place
        "m-20260101-000000-aaaaaa.pt", "m-20260101-000000-aaaaaa.pt.sha256",
        "m-20260102-000000-bbbbbb.pt", "m-20260102-000000-bbbbbb.pt.sha256"]


def test_a_partial_import_is_marked_so_and_retried_for_what_it_skipped(db_url, tmp_path, checkpoints):
    data_dir = legacy_dir_for(db_url, tmp_path)
    build_legacy_data_dir(data_dir, checkpoints)
    missing = data_dir / "models" / "m-20260102-000000-bbbbbb.pt"  # the active one, so the pointer is skipped too
    kept = missing.read_bytes()
    missing.unlink()
    first = migrate(db_url, legacy_data_dir=data_dir).legacy
    assert [what for what, _ in first.skipped] == ["model m-20260102-000000-bbbbbb",
                                                   "active pointer m-20260102-000000-bbbbbb"]
    assert not first.complete and not first.retry
    storage = open_storage(db_url, run_migrations=False)
    try:
        with storage.engine.connect() as conn:
            marker = json.loads(conn.exec_driver_sql("SELECT value FROM storage_meta WHERE key = 'legacy_import'")
                                .scalar())
        assert marker["complete"] is False
        storage.models.delete("m-20260101-000000-aaaaaa")  # the operator deletes one that was imported
        storage.jobs.purge_finished(keep=0)
        jobs_before = [j.id for j in storage.jobs.list()]
    finally:
        storage.close()

    still_missing = migrate(db_url, legacy_data_dir=data_dir).legacy  # retried at each migration
    assert still_missing.retry and [what for what, _ in still_missing.skipped] == [
        "model m-20260102-000000-bbbbbb", "active pointer m-20260102-000000-bbbbbb"]
    assert (still_missing.models, still_missing.jobs) == ([], [])

    missing.write_bytes(kept)  # the file is put back
    retried = migrate(db_url, legacy_data_dir=data_dir).legacy
    assert retried.retry and retried.complete
    assert (retried.models, retried.jobs, retried.active) == (["m-20260102-000000-bbbbbb"], [],
                                                              "m-20260102-000000-bbbbbb")
    assert migrate(db_url, legacy_data_dir=data_dir).legacy is None  # complete: never again
    storage = open_storage(db_url, run_migrations=False)
    try:  # only what was skipped came in: the deleted model and the purged jobs stay gone
        assert {m.id for m in storage.models.list()} == {"default", "m-20260102-000000-bbbbbb"}
        assert storage.models.checkpoint_bytes("m-20260102-000000-bbbbbb") == kept
        assert storage.models.active() == ("m-20260102-000000-bbbbbb", 1)
        assert [j.id for j in storage.jobs.list()] == jobs_before
    finally:
        storage.close()
