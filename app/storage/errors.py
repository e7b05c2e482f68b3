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
