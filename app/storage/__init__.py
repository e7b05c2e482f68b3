"""Where the service keeps models, jobs and the active-model pointer: one database, SQLite or PostgreSQL.

    storage = open_storage("sqlite:///data/seq2seq.db")     # or postgresql://user:pass@host:5432/db
    storage.models.register_trained(...); storage.models.activate("m-1")   # production moves; `previous` follows
    storage.aliases.move("champion", "m-1", expected_generation=0)         # other aliases, compare-and-swap
    job = storage.jobs.claim(owner, host, pid, lease_s=30)   # then every write names job.lease
    watcher = storage.watch_active(on_change).start()

Synchronous throughout (call it via asyncio.to_thread from async code). Imports nothing from the HTTP layer;
`model/` only when a checkpoint is loaded (checkpoints.py). Modules: engine (URLs, engines, transactions),
schema (tables), migrate (+ migrations/), legacy (import of the previous version's data), models (ModelStore),
aliases (AliasStore: production, which is the active pointer, the other aliases and their history),
rows (what the stores return: ModelRow, CheckpointInfo), jobs (JobStore, with its JobRow, Lease, NewJob, JobOutcome),
feedback (FeedbackStore: feedback on impressions, the impressions' key), rollouts (RolloutStore: rollouts, their
decisions, the live counters), learning (LearningStore: learning policies and their cycles, started once),
watcher (ActiveWatcher), checkpoints (hash and load from bytes), filesystems (no SQLite on a network
filesystem), clock, errors.
From a shell: `python -m app.storage migrate --url URL`.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

from .aliases import AliasMove, AliasRow, AliasSnapshot, AliasStore, StaleGeneration
from .checkpoints import load_checkpoint, sha256_of, verify_checkpoint
from .engine import Timeouts, default_url, is_postgres, make_engine, normalize_url, sqlite_path
from .errors import (
    Conflict,
    DowngradeRefused,
    IntegrityFailure,
    MigrationLockTimeout,
    NotFound,
    QueueFull,
    QuotaFull,
    SchemaMismatch,
    StorageError,
    UnsupportedLocation,
    transient,
)
from .feedback import FeedbackEvent, FeedbackRow, FeedbackStore
from .jobs import ExpiredLeases, Finished, JobOutcome, JobRow, JobStore, Lease, LeaseLost, NewJob, Pointer
from .learning import CycleRow, Due, LearningStore, NewCycle, PolicyRow, Unchanged
from .legacy import LegacyReport, import_legacy
from .migrate import (
    LOCK_TIMEOUT_S,
    MigrationResult,
    check_schema,
    downgrade,
    head_revision,
    migrate,
    prepare_schema,
)
from .models import ModelStore, Verifier
from .rollouts import DecisionRow, Outcome, RolloutRow, RolloutStore
from .rows import CheckpointInfo, ModelRow, Source
from .watcher import ActiveWatcher, Callback

__all__ = [
    "ActiveWatcher",
    "AliasMove",
    "AliasRow",
    "AliasSnapshot",
    "AliasStore",
    "CheckpointInfo",
    "Conflict",
    "CycleRow",
    "DecisionRow",
    "DowngradeRefused",
    "Due",
    "ExpiredLeases",
    "FeedbackEvent",
    "FeedbackRow",
    "FeedbackStore",
    "Finished",
    "IntegrityFailure",
    "JobOutcome",
    "JobRow",
    "JobStore",
    "LearningStore",
    "Lease",
    "LeaseLost",
    "LegacyReport",
    "MigrationLockTimeout",
    "MigrationResult",
    "ModelRow",
    "ModelStore",
    "NewCycle",
    "NewJob",
    "NotFound",
    "Outcome",
    "Pointer",
    "PolicyRow",
    "QueueFull",
    "QuotaFull",
    "RolloutRow",
    "RolloutStore",
    "SchemaMismatch",
    "Source",
    "StaleGeneration",
    "Storage",
    "StorageError",
    "Timeouts",
    "Unchanged",
    "UnsupportedLocation",
    "check_schema",
    "default_url",
    "downgrade",
    "head_revision",
    "import_legacy",
    "is_postgres",
    "load_checkpoint",
    "make_engine",
    "migrate",
    "normalize_url",
    "open_storage",
    "prepare_schema",
    "sha256_of",
    "sqlite_path",
    "transient",
    "verify_checkpoint",
]


class Storage:
    """One engine and the stores on it; one per process."""

    def __init__(self, engine: Engine, verify: Verifier | None = verify_checkpoint):
        self.engine = engine
        self.models = ModelStore(engine, verify)
        self.jobs = JobStore(engine, verify)
        self.aliases = AliasStore(engine)
        self.feedback = FeedbackStore(engine)
        self.rollouts = RolloutStore(engine)
        self.learning = LearningStore(engine)

    def watch_active(self, callback: Callback, **kwargs) -> ActiveWatcher:
        """A watcher on this engine (not started); see ActiveWatcher for the keyword arguments."""
        return ActiveWatcher(self.engine, callback, **kwargs)

    def close(self) -> None:
        self.engine.dispose()


def open_storage(url: str, *, run_migrations: bool = True, migrate_mode: str = "auto",
                 legacy_data_dir: Path | str | None = None, verify: Verifier | None = verify_checkpoint,
                 timeouts: Timeouts | None = None, migrate_lock_timeout_s: float = LOCK_TIMEOUT_S) -> Storage:
    """Engine for url with the schema made ready first (prepare_schema: migrated under the migration lock in
    `auto` mode, only checked in `check` mode), unless run_migrations is False."""
    engine = make_engine(url, timeouts)
    try:
        if run_migrations:
            prepare_schema(engine, migrate_mode, legacy_data_dir, lock_timeout_s=migrate_lock_timeout_s)
    except BaseException:
        engine.dispose()
        raise
    return Storage(engine, verify)
