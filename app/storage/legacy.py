"""The one-off import of data written by the previous version: app/db.py's SQLite file and DATA_DIR/models/.

Sources, in order: the legacy_* tables that migration 0001 renamed aside when the target is that same SQLite
file, or else DATA_DIR/seq2seq.db in the old schema when the target is another database (PostgreSQL). Trained
checkpoint files are read, checked against the row's SHA-256 and their `.sha256` manifest, and stored as
bytes; shipped models keep their path; every job is copied (a job that was running when the old version
stopped reads failed / 'interrupted', as the old version itself would have recorded at its next start); the
active pointer follows. One transaction, then a marker row in storage_meta: it runs once, and running it
again changes nothing. The old tables and files are left where they were, so nothing is destroyed.

An import that had to skip something (a checkpoint file missing or damaged, so also the active pointer that
names it) writes its marker as partial: each later migration retries only what was skipped, so a file put
back in place is imported then, while what was imported (and perhaps deleted since) is not touched again.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import clock
from .checkpoints import sha256_of
from .engine import DEFAULT_DB_NAME, sqlite_path, write
from .schema import active_model, jobs, meta, models

log = logging.getLogger("seq2seq.storage.legacy")
MARKER = "legacy_import"
ACTIVE_KEY = "active_model"


@dataclass
class LegacyReport:
    source: str
    models: list[str] = field(default_factory=list)   # ids imported
    jobs: list[str] = field(default_factory=list)
    active: str | None = None                          # the pointer set from the old `state` table
    skipped: list[list[str]] = field(default_factory=list)  # [id, why] for anything that could not be imported
    retry: bool = False                                # a retry of a partial import: only what it skipped

    @property
    def complete(self) -> bool:
        return not self.skipped


@dataclass(frozen=True)
class _Pending:
    """What a partial import left to retry, read back from its marker."""

    models: frozenset[str]
    active: bool

    @classmethod
    def of(cls, marker: str) -> _Pending | None:
        """None when the marker says the import is complete (markers written before `complete` existed are)."""
        value = json.loads(marker)
        if value.get("complete", True):
            return None
        whats = [what for what, _ in value.get("skipped", [])]
        return cls(frozenset(w.removeprefix("model ") for w in whats if w.startswith("model ")),
                   any(w.startswith("active pointer ") for w in whats))


def _legacy_rows_same_db(conn: Connection) -> tuple[list[dict], list[dict], dict[str, str]] | None:
    names = set(sa.inspect(conn).get_table_names())
    if "legacy_models" not in names and "legacy_jobs" not in names:
        return None

    def rows(table: str) -> list[dict]:
        if table not in names:
            return []
        return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings()]

    state = {r["key"]: r["value"] for r in rows("legacy_state")}
    return rows("legacy_models"), rows("legacy_jobs"), state


def _legacy_rows_file(path: Path) -> tuple[list[dict], list[dict], dict[str, str]] | None:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "models" not in names:
            return None
        if "checkpoint" in {r[1] for r in db.execute("PRAGMA table_info(models)")}:
            return None  # this file is already in the new schema: not a legacy database
        models_rows = [dict(r) for r in db.execute("SELECT * FROM models")]
        jobs_rows = [dict(r) for r in db.execute("SELECT * FROM jobs")] if "jobs" in names else []
        state = {r["key"]: r["value"] for r in db.execute("SELECT key, value FROM state")} if "state" in names else {}
        return models_rows, jobs_rows, state
    finally:
        db.close()


def _checkpoint_file(row: dict, models_dir: Path | None) -> Path:
    path = Path(row["path"])
    if not path.exists() and models_dir is not None:
        path = models_dir / path.name  # the data directory moved (a relative path, another mount point)
    return path


class Unreadable(Exception):
    """A legacy checkpoint that cannot be imported; the message says why (it goes into the report)."""


def _read_trained(row: dict, models_dir: Path | None) -> bytes:
    path = _checkpoint_file(row, models_dir)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise Unreadable(f"checkpoint file {path} cannot be read ({exc.strerror or exc})") from exc
    digest = sha256_of(blob)
    if digest != row["sha256"]:
        raise Unreadable(f"checkpoint file {path} has SHA-256 {digest[:12]}..., the registry recorded "
                         f"{row['sha256'][:12]}...")
    manifest = path.with_name(path.name + ".sha256")
    try:
        recorded = manifest.read_text().split()[0]
    except (OSError, IndexError):
        recorded = digest  # the row's hash matched; a lost manifest alone loses nothing
    if recorded != digest:
        raise Unreadable(f"checkpoint file {path} does not match its manifest {manifest.name}")
    return blob


def _job_values(row: dict, body: Any, now: str) -> dict:
    status, error, finished = row["status"], row.get("error"), row.get("finished_at")
    if status == "running":
        status, error, finished = "failed", "interrupted", finished or now
    elif status == "queued" and body is None:
        status, error, finished = "failed", "interrupted: the job's body was missing at migration", now
    return {"id": row["id"], "seq": row["seq"], "status": status, "config": row["config"],
            "body": None if body is None else json.dumps(body), "progress": row["progress"],
            "history": row["history"], "created_at": row["created_at"], "started_at": row.get("started_at"),
            "finished_at": finished, "error": error, "model_id": row.get("model_id"),
            "activated": bool(row.get("activated")), "activation_reason": row.get("activation_reason"),
            "attempt": 1 if row.get("started_at") else 0, "max_attempts": 2, "lease_owner": None,
            "lease_expires_at": None, "worker_host": None, "worker_pid": None,
            "cancel_requested": status == "cancelled"}


def _read_body(data_dir: Path | None, job_id: str) -> Any:
    if data_dir is None:
        return None
    try:
        return json.loads((data_dir / "jobs" / f"{job_id}.json").read_text())
    except (OSError, ValueError):
        return None


def import_legacy(engine: Engine, data_dir: Path | str | None = None) -> LegacyReport | None:
    """Import legacy data once (and retry what a partial import skipped); None when there is nothing to
    import or it was all imported before.

    data_dir: the old DATA_DIR (for its models/ and jobs/ folders, and its seq2seq.db when the target is
    another database). For a SQLite target it defaults to the database file's folder."""
    target = sqlite_path(engine.url)
    if data_dir is None and target is not None:
        data_dir = target.parent
    data_dir = Path(data_dir) if data_dir is not None else None
    with write(engine) as conn:
        marker = conn.execute(sa.select(meta.c.value).where(meta.c.key == MARKER)).scalar()
        pending = _Pending.of(marker) if marker is not None else None
        if marker is not None and pending is None:
            return None
        found = _legacy_rows_same_db(conn)
        source = f"{target} (legacy_* tables)"
        if found is None and data_dir is not None:
            legacy_file = data_dir / DEFAULT_DB_NAME
            if legacy_file.exists() and (target is None or legacy_file.resolve() != target.resolve()):
                found, source = _legacy_rows_file(legacy_file), str(legacy_file)
        if found is None:
            return None
        model_rows, job_rows, state = found
        report = LegacyReport(source=source, retry=pending is not None)
        if pending is not None:  # only what the last attempt skipped; the jobs all went in then
            model_rows = [row for row in model_rows if row["id"] in pending.models]
            job_rows, state = [], state if pending.active else {}
        _import(conn, report, model_rows, job_rows, state, data_dir)
        conn.execute(sa.delete(meta).where(meta.c.key == MARKER))
        conn.execute(sa.insert(meta).values(key=MARKER, value=json.dumps({**asdict(report),
                                                                           "complete": report.complete})))
    for what, why in report.skipped:
        log.error("legacy import: %s not imported (retried at the next migration): %s", what, why)
    log.info("legacy import%s from %s: %d models, %d jobs, active %s%s", " retry" if report.retry else "",
             report.source, len(report.models), len(report.jobs), report.active,
             "" if report.complete else f"; partial, {len(report.skipped)} left")
    return report


def _import(conn: Connection, report: LegacyReport, model_rows: list[dict], job_rows: list[dict],
            state: dict[str, str], data_dir: Path | None) -> None:
    models_dir = data_dir / "models" if data_dir is not None else None
    existing = set(conn.execute(sa.select(models.c.id)).scalars())
    for row in model_rows:
        if row["id"] in existing:
            continue
        values = {"id": row["id"], "source": row["source"], "sha256": row["sha256"], "created_at": row["created_at"],
                  "info": row["info"]}
        if row["source"] == "shipped":
            values.update(path=row["path"], checkpoint=None)
        else:
            try:
                blob = _read_trained(row, models_dir)
            except Unreadable as exc:
                report.skipped.append([f"model {row['id']}", str(exc)])
                continue
            values.update(path=None, checkpoint=blob)
        conn.execute(sa.insert(models).values(**values))
        report.models.append(row["id"])

    now = clock.iso(clock.db_now(conn))
    have_jobs = set(conn.execute(sa.select(jobs.c.id)).scalars())
    taken = set(conn.execute(sa.select(jobs.c.seq)).scalars())
    next_seq = max(taken, default=0) + 1
    for row in sorted(job_rows, key=lambda r: r["seq"]):
        if row["id"] in have_jobs:
            continue
        values = _job_values(row, _read_body(data_dir, row["id"]), now)
        if values["seq"] in taken:  # jobs submitted to the new database before the import: keep both orders
            values["seq"] = next_seq
        taken.add(values["seq"])
        next_seq = max(next_seq, values["seq"] + 1)
        conn.execute(sa.insert(jobs).values(**values))
        report.jobs.append(row["id"])

    wanted = state.get(ACTIVE_KEY)
    if wanted:
        pointer = conn.execute(sa.select(active_model.c.model_id).where(active_model.c.id == 1)).scalar()
        if pointer is None and conn.execute(sa.select(models.c.id).where(models.c.id == wanted)).first():
            conn.execute(sa.update(active_model).where(active_model.c.id == 1)
                         .values(model_id=wanted, version=active_model.c.version + 1, changed_at=now))
            report.active = wanted
        elif pointer is None:
            report.skipped.append([f"active pointer {wanted}", "the model it names was not imported"])
