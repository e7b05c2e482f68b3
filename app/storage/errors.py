"""What the stores raise. Each error carries the HTTP status the service should answer with, as a hint only."""
from __future__ import annotations


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
