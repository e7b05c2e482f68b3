"""Background training: the HTTP-facing service, the runner that trains jobs from the shared queue, the
activation policy, the typed protocol with the training process, and that process."""
from .runner import JobRunner
from .service import STATUSES, TERMINAL, JobService

__all__ = ["STATUSES", "TERMINAL", "JobRunner", "JobService"]
