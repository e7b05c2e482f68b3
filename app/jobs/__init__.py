"""Background training: the HTTP-facing service; the runner (scheduler) that claims jobs from the shared queue, built
by factory.build_runner; the supervisor of one job's training process, which it starts through the launcher; the
registration of a trained model and its activation policy; the typed protocol with the training process, and that
process."""
from .factory import build_runner
from .scheduler import JobRunner
from .service import JobService

__all__ = ["JobRunner", "JobService", "build_runner"]
