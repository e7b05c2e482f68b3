"""Builds the FastAPI app: settings, storage, registry, inference engine, jobs and routers, wired in the lifespan.

Each serving process (SEQ2SEQ_WORKERS of them) builds its own: its own batcher, cache and loaded models, one
shared database. At most one process per instance runs the job runner (a lock file in the data directory
decides which), so SEQ2SEQ_JOB_WORKERS counts training processes per instance, not per serving process.
"""
from __future__ import annotations

import asyncio
import fcntl
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
import torch
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from model import decoding

from . import device as devices
from . import storage
from .feedback.service import Impressions
from .http import errors
from .http.deps import MANAGEMENT_KEY
from .http.middleware import ServiceMiddleware
from .http.oip import routes as oip
from .http.routes import aliases, feedback, health, inference, jobs, learning, models, pages, rollouts
from .inference.engine import Engine
from .jobs import JobService, build_runner
from .learning import Learning
from .metrics import Metrics, WorkerMetrics
from .offload import hand_back_promptly
from .registry import Registry
from .rollouts.service import Rollouts
from .security import ManagedRoutes, resolve_key
from .settings import Settings, get_settings

log = logging.getLogger("seq2seq")
RUNNER_LOCK = "job-runner.lock"
RUNNER_RETRY_S = 5.0
DATABASE_DOWN = (sa.exc.DBAPIError, OSError)  # what an unreachable or stopped database raises
FIRST = {path: i for i, path in enumerate(("/predict", "/v2/models/{name}/infer", "/topk"))}  # matched first, in order


def try_lock(path: Path) -> int | None:
    """An exclusive lock held for the process's life (the kernel drops it when the process dies), or None."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(settings.threads)
        settings.data_dir.mkdir(parents=True, exist_ok=True)

        def connect() -> storage.Storage:
            # SEQ2SEQ_MIGRATE=auto migrates under a lock; check only checks the schema fits (SchemaMismatch if not)
            return storage.open_storage(settings.db_url, migrate_mode=settings.migrate,
                                        legacy_data_dir=settings.data_dir, timeouts=settings.db_timeouts,
                                        migrate_lock_timeout_s=settings.migrate_lock_timeout_s)

        database_down: BaseException | None = None
        try:
            store = connect()
        except DATABASE_DOWN as exc:  # serve the shipped weights meanwhile: a fleet must not need its database to start
            store = storage.open_storage(settings.db_url, run_migrations=False, timeouts=settings.db_timeouts)
            database_down = exc
            log.error("the database cannot be reached (%s); serving the shipped weights until it can", _why(exc))
        impressions = Impressions(store.feedback, settings.impressions, settings.impression_key,
                                  settings.impression_ttl_s, settings.impression_mac)
        device = devices.resolve(settings.device)
        registry = Registry(store.models, settings.weights_dir, device, settings.default_model, settings.loaded_models,
                            model_loads=settings.model_loads, failure_ttl_s=settings.load_failure_ttl_s,
                            retry_s=settings.active_retry_s, retry_max_s=settings.active_retry_max_s)
        trials = Rollouts(store.rollouts, metrics, settings.default_model, decide_s=settings.rollout_decide_s, flush_s=settings.live_flush_s)
        trials.load = lambda model_id: registry.loader.load(model_id, fresh=True)
        trials.hold = registry.hold

        def aliases_moved(version: int) -> None:  # rollouts bump the aliases' version: both are read again
            registry.follow_aliases(version)
            trials.refresh(version)

        watcher = store.watch_active(registry.follow, probe_s=settings.listen_probe_s, on_aliases=aliases_moved)
        if database_down is None:
            registry.sync_shipped()
            registry.load_active()
            impressions.load_key()
            watcher.since(registry.active_version)
            watcher.start()
        else:
            registry.serve_without_database(  # /readyz is open: the type only, the driver's text (host, port) is logged
                f"the database cannot be reached ({type(database_down).__name__})")
        if registry.active is not None:  # warm up: the first request should not pay for lazy initialisation
            decoding.greedy(registry.active.model, [[0]], want_attention=True)
            decoding.topk(registry.active.model, [[0]], 3)
        engine = Engine(registry, metrics, settings.cache_size, settings.max_batch_size,
                        settings.max_batch_wait_ms / 1000, settings.threads, settings.inference_thread,
                        settings.decode_budget, settings.inline_budget, settings.decode_timeout_s, impressions)
        engine.batcher.start()
        trials.topk = engine.topk
        service = JobService(store, settings, metrics, None)
        loop = Learning(store, settings, wake=service.wake, rollouts_changed=trials.refresh)
        background: list[asyncio.Task] = [asyncio.get_running_loop().create_task(trials.run()),
                                          asyncio.get_running_loop().create_task(loop.run(settings.learning_check_s))]

        async def start_jobs() -> None:
            await service.start()
            if settings.job_workers > 0:
                background.append(asyncio.get_running_loop().create_task(
                    _run_jobs(settings, store, device, registry, service)))

        if database_down is None:
            await start_jobs()
        else:
            background.append(asyncio.get_running_loop().create_task(
                _reach_database(settings, connect, registry, watcher, start_jobs, impressions.load_key)))
        app.state.settings, app.state.storage, app.state.registry, app.state.engine = settings, store, registry, engine
        app.state.jobs, app.state.metrics, app.state.device = service, metrics, device
        app.state.event_streams = 0
        app.state.impressions = impressions
        app.state.rollouts = trials
        app.state.learning = loop
        # Everything loaded so far (torch, the app, the model) lives as long as the process: keep it out of the
        # cyclic collector's full passes, which otherwise stall every request for tens of milliseconds.
        gc.collect()
        gc.freeze()
        switch_interval = hand_back_promptly()
        yield
        sys.setswitchinterval(switch_interval)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await engine.batcher.stop()
        engine.close()
        watcher.stop()
        service.close()
        loop.close()
        impressions.close()
        trials.close()
        registry.close()
        store.close()
        log.info("stopped cleanly")

    telemetry: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="seq2seq-serve", version="0.2.0", lifespan=lifespan,
                  telemetry=None if settings.opentelemetry else telemetry,
                  description="Continue digit sequences and suggest the k most likely continuations with a "
                              "small LSTM encoder-decoder; train new models in the background.")
    errors.install(app)
    # The routers' routes join the app's own list: one flat table that FastAPI matches, documents and walks. They go
    # ahead of FastAPI's own (the OpenAPI schema and the docs pages), which every request would be matched against
    # first otherwise; no path of theirs is one of ours. The single-prefix inference routes (FIRST) lead.
    ours = [route for router in (inference.router, oip.infer_router, feedback.router, feedback.manage, models.router,
                                 aliases.router, rollouts.router, learning.router, jobs.router, health.router,
                                 oip.router, pages.router) for route in router.routes]
    ours.sort(key=lambda route: FIRST.get(getattr(route, "path", ""), len(FIRST)))  # stable: the rest keep order
    app.router.routes[:0] = ours
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    api_key = resolve_key(settings.api_key, settings.auth, settings.data_dir)
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_request_bytes=settings.max_request_bytes,
                       max_job_bytes=settings.max_job_bytes, max_batch_bytes=settings.max_batch_bytes, api_key=api_key,
                       managed=ManagedRoutes.of(app.routes, MANAGEMENT_KEY))
    app.state.api_key = api_key
    return app


def _why(exc: BaseException) -> str:
    """A connection error in one line for the log (the driver's text names host and port, never the password)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


async def _reach_database(settings: Settings, connect: Callable[[], storage.Storage], registry: Registry,
                          watcher: storage.ActiveWatcher, start_jobs: Callable[[], Awaitable[None]],
                          load_key: Callable[[], None]) -> None:
    """After a start without the database: try it every SEQ2SEQ_DATABASE_RETRY_S; once it answers, do what a normal
    start does (migrate or check, register the shipped files, follow the pointer, read the impressions' key, watch
    the pointer, run jobs)."""
    while True:
        await asyncio.sleep(settings.database_retry_s)
        try:
            await asyncio.to_thread(lambda: connect().close())
            await asyncio.to_thread(registry.sync_shipped)
            await asyncio.to_thread(registry.load_active)
            await asyncio.to_thread(load_key)
        except DATABASE_DOWN as exc:
            log.warning("the database still cannot be reached (%s)", _why(exc))
            continue
        break
    watcher.since(registry.active_version)
    await asyncio.to_thread(watcher.start)
    await start_jobs()
    log.info("the database is reachable again; serving %s", registry.active.id if registry.active else "nothing")


async def _run_jobs(settings: Settings, store: storage.Storage, device: devices.Device, registry: Registry,
                    service: JobService) -> None:
    """Run the job runner once this process holds the instance's runner lock; until then, try again now and then."""
    while (fd := try_lock(settings.data_dir / RUNNER_LOCK)) is None:
        await asyncio.sleep(RUNNER_RETRY_S)
    runner = build_runner(settings, store, device, on_activated=registry.follow, on_change=service.changed,
                          metrics=WorkerMetrics(service.metrics.registry))  # the runner's figures join /metrics
    service.runner = runner
    await runner.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.stop()
        os.close(fd)
