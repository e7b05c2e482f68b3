"""Small builders the storage tests share."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from app.storage import NewJob, Storage, make_engine


@dataclass(frozen=True)
class Ckpt:
    blob: bytes
    sha256: str
    created_at: str
    info: dict


def register(storage: Storage, model_id: str, ckpt: Ckpt) -> dict:
    return storage.models.register_trained(model_id, ckpt.blob, ckpt.sha256, ckpt.created_at, ckpt.info)


def new_job(job_id: str, **extra) -> NewJob:
    fields = {"config": {"name": job_id}, "progress": {"step": 0, "total_steps": 10}, "max_attempts": 2,
              "body": {"dataset": {"generator": "random"}}, "model_id": f"m-{job_id}", **extra}
    return NewJob(id=job_id, **fields)


def race(storage_url: str, work: Callable[[Engine, int], object]) -> list[object]:
    """work(engine, i) for i = 0 and 1 on two engines (two processes' worth of connections) at the same moment;
    each result, or the exception it raised."""
    engines = [make_engine(storage_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    results: list[object] = [None, None]

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(engines[i], i)
        except Exception as exc:
            results[i] = exc

    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for engine in engines:
            engine.dispose()
    return results
