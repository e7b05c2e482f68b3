"""The one way to build a job runner from the settings, for a serving instance (app/main.py) and for a dedicated
worker (`python -m app.worker`) alike."""
from __future__ import annotations

from collections.abc import Callable

from .. import storage
from ..device import Device
from ..metrics import WorkerMetrics
from ..settings import Settings
from .scheduler import JobRunner
from .supervisor import Limits


def build_runner(settings: Settings, store: storage.Storage, device: Device, *,
                 on_activated: Callable[[str, int], None] | None = None,
                 on_change: Callable[[], None] | None = None, metrics: WorkerMetrics | None = None) -> JobRunner:
    """A runner with SEQ2SEQ_JOB_WORKERS slots (at least one: whoever builds a runner means it to train).
    on_activated: this process serves models too, so it swaps to an activated one at once; on_change: a job of
    this runner changed (the service's event streams listen); metrics: where the runner's figures go."""
    return JobRunner(store, device, slots=max(1, settings.job_workers), lease_s=settings.job_lease_s,
                     threads=settings.job_threads, default_model=settings.default_model,
                     standby=settings.job_standby, on_activated=on_activated, on_change=on_change, metrics=metrics,
                     limits=Limits(lease_s=settings.job_lease_s, progress_timeout_s=settings.job_progress_timeout_s,
                                   lock_wait_s=settings.job_lock_wait_s, max_handbacks=settings.job_max_handbacks))
