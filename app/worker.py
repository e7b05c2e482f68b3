"""`python -m app.worker` (`make worker`): a training worker that needs only the database.

It claims jobs from the shared queue, trains them on its own device (SEQ2SEQ_DEVICE; CUDA when present),
streams progress into the database and registers each model in the same transaction that ends its job. It is
the runner a serving instance runs (app.jobs.build_runner, the same settings): SEQ2SEQ_JOB_WORKERS jobs at once
(at least one), a warmed-up spare with SEQ2SEQ_JOB_STANDBY. SIGTERM hands the running jobs back to the queue
(their attempt is not counted, so another worker starts them again at once; the hand-back is, up to
SEQ2SEQ_JOB_MAX_HANDBACKS) and exits 0. With SEQ2SEQ_WORKER_METRICS_PORT it serves its Prometheus metrics
(app.metrics.WorkerMetrics) there, from prometheus_client's own small server on a thread: the worker has no HTTP
app to carry a route. It imports the model, the storage layer and the job runner; never the HTTP app.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from . import device as devices
from . import storage
from .jobs import build_runner
from .metrics import WorkerMetrics
from .offload import hand_back_promptly
from .settings import get_settings

log = logging.getLogger("seq2seq.worker")


async def run() -> None:
    settings = get_settings()
    hand_back_promptly()
    store = storage.open_storage(settings.db_url, migrate_mode=settings.migrate, legacy_data_dir=None,
                                 timeouts=settings.db_timeouts, migrate_lock_timeout_s=settings.migrate_lock_timeout_s)
    device = devices.resolve(settings.device)
    metrics = WorkerMetrics()
    runner = build_runner(settings, store, device, metrics=metrics)
    exporter = None
    if settings.worker_metrics_port is not None:
        exporter, _ = start_http_server(settings.worker_metrics_port, settings.host, registry=metrics.registry)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.start()
    log.info("worker %s training on %s, %d job(s) at once", runner.owner, device, runner.slots)
    await stop.wait()
    log.info("stopping: handing %d running job(s) back to the queue", runner.busy)
    await runner.stop()
    if exporter is not None:
        exporter.shutdown()
        exporter.server_close()
    store.close()


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run())


if __name__ == "__main__":
    main()
