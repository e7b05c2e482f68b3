"""Small builders the storage tests share."""
from __future__ import annotations

from dataclasses import dataclass

from app.storage import NewJob, Storage


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
