"""A succeeded run's model into the registry: what the if_better gate compares with, then, in one transaction,
the checkpoint read back and registered (SHA-256, then a weights_only load), the job ended and, by its policy, the
model activated, if the pointer still names what the job was compared with and no cancel was asked for."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from model import checkpoint
from model.jobspec import JobSpec

from .. import storage
from ..registry import info_of
from . import policy
from .protocol import Result, RunSpec

log = logging.getLogger("seq2seq.jobs")
Persist = Callable[[Callable[[], storage.Finished]], Awaitable[storage.Finished]]  # runs a write, retrying


def _written(path: Path, blob: bytes) -> Path:
    path.write_bytes(blob)
    checkpoint.manifest_path(path).write_text(f"{storage.sha256_of(blob)}  {path.name}\n")
    return path


class NotRegistered(Exception):
    """The trained checkpoint cannot be registered; the reason names no file path."""


class Registration:
    def __init__(self, store: storage.Storage, default_model: str, lock_wait_s: float | None = None,
                 on_activated: Callable[[str, int], None] | None = None):
        self.store = store
        self.default_model = default_model  # active while the pointer names none
        self.lock_wait_s = lock_wait_s  # each try of the registering transaction waits this long for a lock
        self.on_activated = on_activated  # this process serves models too: swap at once, not at the next poll

    def baseline(self, spec: JobSpec, path: Path) -> tuple[str | None, Path | None, storage.Pointer]:
        """(the active model's id, its checkpoint written to `path`, the pointer as read) for an if_better job to
        be scored against. The id is None when no model is active; the path is None when there is nothing to
        compare with, or the active model cannot be read (the gate then says so, and refuses). The model is
        activated only if the pointer still reads the same when the job ends."""
        pointer = self.store.models.active()
        compared_id = pointer[0] or self.default_model
        if spec.activate != "if_better":
            return compared_id, None, pointer
        try:
            blob = self.store.models.checkpoint_bytes(compared_id)
        except storage.NotFound:  # no model to compare with: nothing is active
            return None, None, pointer
        except storage.StorageError:
            return compared_id, None, pointer
        return compared_id, _written(path, blob), pointer

    def checkpoint_of(self, model_id: str, path: Path) -> Path | None:
        """The model's checkpoint written to `path` (with its manifest); None when it cannot be read."""
        try:
            return _written(path, self.store.models.checkpoint_bytes(model_id))
        except storage.StorageError:  # NotFound included: the gate then refuses, saying so
            return None

    async def register(self, lease: storage.Lease, model_id: str | None, run: RunSpec, result: Result,
                       outcome: storage.JobOutcome, compared: storage.Pointer, persist: Persist) -> storage.Finished:
        """End the job 'succeeded' with its model registered, through `persist` (which retries transient database
        errors while the lease holds). NotRegistered when the checkpoint is refused; storage.LeaseLost when the
        job is no longer this claim's (nothing was written)."""
        if model_id is None:  # the service names every job's model when it is submitted
            raise NotRegistered("the job has no model id")
        activate, reason = policy.decide(run.spec.activate, result.gate, run.compared_id)
        recorded: storage.JobOutcome = {**outcome, "activation_reason": reason}
        # if_better was scored against the pointer as it was: it may move the pointer only from there
        condition = compared if run.spec.activate == "if_better" else None
        try:
            ckpt = await asyncio.to_thread(checkpoint.load, Path(run.out))
            blob = await asyncio.to_thread(Path(run.out).read_bytes)
            finished = await persist(lambda: self.store.jobs.finish_with_model(
                lease, model_id=model_id, checkpoint=blob, sha256=storage.sha256_of(blob),
                created_at=ckpt.created_at, info=info_of(ckpt), activate=activate, compared=condition,
                outcome=recorded, lock_wait_s=self.lock_wait_s))
        except storage.LeaseLost:
            raise
        except (storage.IntegrityFailure, storage.Conflict, checkpoint.CheckpointError) as exc:
            why = exc.reason if isinstance(exc, checkpoint.CheckpointError) else str(exc)  # never a path
            raise NotRegistered(why) from exc
        if finished.version is not None and self.on_activated is not None:  # loading a model: off the event loop
            await asyncio.to_thread(self.on_activated, model_id, finished.version)
        log.info("job %s succeeded: model %s (%s)", lease.job_id, model_id, finished.reason)
        return finished
