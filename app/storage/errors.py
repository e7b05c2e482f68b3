"""What the stores raise. Each error carries the HTTP status the service should answer with, as a hint only."""
from __future__ import annotations

from sqlalchemy import exc as sa_exc


class StorageError(Exception):
    status = 500


class NotFound(StorageError):
    status = 404


class Conflict(StorageError):
    """The request contradicts the stored state: a duplicate id, deleting the active model, cancelling an ended job."""

    status = 409


class IntegrityFailure(StorageError):
    """Bytes that do not match their SHA-256, or a checkpoint that does not load."""

    status = 422


class QueueFull(StorageError):
    status = 429

    def __init__(self, queued: int, limit: int):
        super().__init__(f"the job queue is full ({queued} jobs waiting, limit {limit})")
        self.queued = queued
        self.limit = limit


class QuotaFull(StorageError):
    """A limit on stored things (job records, trained models) checked when a job is queued."""

    status = 409

    def __init__(self, what: str, count: int, limit: int):
        super().__init__(f"{what}: {count} of at most {limit}")
        self.what = what
        self.count = count
        self.limit = limit


def transient(exc: BaseException) -> bool:
    """A database error that may pass if tried again: a lock not granted in time (SQLite's "database is locked",
    PostgreSQL's lock_timeout), a dropped connection, a failover."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)


class SchemaMismatch(StorageError):
    """The database's schema and this code do not fit: not migrated yet, or migrated by an incompatible newer
    version. The message says which revision each side is at and what to do."""

    status = 503


class MigrationLockTimeout(StorageError):
    """Another process held the migration lock for longer than this one would wait."""

    status = 503


class UnsupportedLocation(StorageError):
    """A SQLite file on a filesystem where SQLite's locking does not work (a network filesystem)."""


class DowngradeRefused(StorageError):
    """A downgrade that would destroy stored data (trained checkpoints, job records); nothing was changed."""

    status = 409
