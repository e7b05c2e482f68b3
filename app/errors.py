"""The service's domain errors. The core (inference, registry, jobs) raises these; `app.http.errors` is the
one place that turns them, and the storage and model layers' own errors, into HTTP statuses."""
from __future__ import annotations


class ServiceError(Exception):
    """Base: the message is safe to show a client (names models and fields, never file paths)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidInput(ServiceError):
    """A request field the service cannot accept; `field` names it the way the client sent it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class Forbidden(ServiceError):
    """The request asks for something its caller may not have (a non-public model without the key)."""


class NotFound(ServiceError):
    pass


class Conflict(ServiceError):
    """The request is valid but the state forbids it (an active model's deletion, a finished job's cancel)."""


class QuotaExceeded(ServiceError):
    """A limit on stored things (models, job records); something must be deleted first."""


class Busy(ServiceError):
    """Too many requests of this kind right now (the job queue, event streams); try again later."""


class Unavailable(ServiceError):
    """The service cannot answer now (no model loaded, decoding past its deadline)."""
