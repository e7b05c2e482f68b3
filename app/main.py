"""Builds the FastAPI app: settings, registry, inference engine and routers, wired in the lifespan."""
from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from model import decoding

from . import errors
from .db import Database
from .engine import Engine
from .jobs import JobManager
from .metrics import Metrics
from .middleware import ServiceMiddleware
from .registry import Registry
from .routes import health, inference, jobs, models, pages
from .security import resolve_key
from .settings import Settings, get_settings

log = logging.getLogger("seq2seq")


def choose_device(name: str) -> tuple[torch.device, str | None]:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), None
    if name.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu"), f"{name} was asked for but CUDA is not available; serving on cpu"
    return torch.device(name), None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(settings.threads)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.data_dir / "seq2seq.db")
        device, note = choose_device(settings.device)
        registry = Registry(db, settings.weights_dir, settings.data_dir / "models", device,
                            settings.default_model, settings.loaded_models)
        registry.device_note = note
        if note:
            log.warning(note)
        registry.sync_shipped()
        registry.load_active()
        if registry.active is not None:  # warm up: the first request should not pay for lazy initialisation
            decoding.greedy(registry.active.model, [[0]], want_attention=True)
            decoding.topk(registry.active.model, [[0]], 3)
        engine = Engine(registry, metrics, settings.cache_size, settings.max_batch_size,
                        settings.max_batch_wait_ms / 1000, settings.threads, settings.inference_thread,
                        settings.decode_budget, settings.inline_budget, settings.decode_timeout_s)
        engine.batcher.start()
        job_manager = JobManager(db, registry, settings, metrics)
        await job_manager.start()
        app.state.jobs = job_manager
        app.state.settings, app.state.db, app.state.registry, app.state.engine = settings, db, registry, engine
        app.state.metrics = metrics
        app.state.event_streams = 0
        # Everything loaded so far (torch, the app, the model) lives as long as the process: keep it out of the
        # cyclic collector's full passes, which otherwise stall every request for tens of milliseconds.
        gc.collect()
        gc.freeze()
        yield
        await job_manager.stop()
        await engine.batcher.stop()
        engine.close()
        db.close()
        log.info("stopped cleanly")

    app = FastAPI(title="seq2seq-serve", version="0.1.0", lifespan=lifespan,
                  description="Continue digit sequences and suggest the k most likely continuations with a "
                              "small LSTM encoder-decoder; train new models in the background.")
    errors.install(app)
    api_key = resolve_key(settings.api_key, settings.auth, settings.data_dir)
    app.add_middleware(ServiceMiddleware, metrics=metrics, max_request_bytes=settings.max_request_bytes,
                       max_job_bytes=settings.max_job_bytes, api_key=api_key)
    app.state.api_key = api_key
    for router in (inference.router, models.router, jobs.router, health.router, pages.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    return app
