"""A succeeded run's model into the registry: what the if_better gate compares with, then, in one transaction,
the checkpoint read back and registered (SHA-256, then a weights_only load), the job ended and, by its policy, the
model activated."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from model import checkpoint
from model.jobspec import JobSpec

from .. import storage
from ..registry import info_of
from . import policy
from .protocol import Result, RunSpec

log = logging.getLogger("seq2seq.jobs")


class NotRegistered(Exception):
    """The trained checkpoint cannot be registered; the reason names no file path."""


class Registration:
    def __init__(self, store: storage.Storage, owner: str, default_model: str,
                 on_activated: Callable[[str, int], None] | None = None):
        self.store = store
        self.owner = owner  # the lease the job is held by
        self.default_model = default_model  # active while the pointer names none
        self.on_activated = on_activated  # this process serves models too: swap at once, not at the next poll

    def baseline(self, spec: JobSpec, path: Path) -> tuple[str | None, Path | None]:
        """(the active model's id, its checkpoint written to `path`) for an if_better job to be scored against.
        The id is None when no model is active; the path is None when there is nothing to compare with, or the
        active model cannot be read (the gate then says so, and refuses)."""
        compared_id = self.store.models.active()[0] or self.default_model
        if spec.activate != "if_better":
            return compared_id, None
        try:
            blob = self.store.models.checkpoint_bytes(compared_id)
        except storage.NotFound:  # no model to compare with: nothing is active
            return None, None
        except storage.StorageError:
            return compared_id, None
        path.write_bytes(blob)
        checkpoint.manifest_path(path).write_text(f"{storage.sha256_of(blob)}  {path.name}\n")
        return compared_id, path

    async def register(self, job: storage.JobRow, run: RunSpec, result: Result, outcome: storage.JobOutcome) -> None:
        """End the job 'succeeded' with its model registered. NotRegistered when the checkpoint is refused;
        storage.LeaseLost when the job is no longer this runner's (nothing was written)."""
        if job.model_id is None:  # the service names every job's model when it is submitted
            raise NotRegistered("the job has no model id")
        model_id = job.model_id
        activate, reason = policy.decide(run.spec.activate, result.gate, run.compared_id)
        recorded: storage.JobOutcome = {**outcome, "activation_reason": reason}
        try:
            version = await asyncio.to_thread(self._register, job.id, model_id, Path(run.out), activate, recorded)
        except storage.LeaseLost:
            raise
        except (storage.IntegrityFailure, storage.Conflict, checkpoint.CheckpointError) as exc:
            why = exc.reason if isinstance(exc, checkpoint.CheckpointError) else str(exc)  # never a path
            raise NotRegistered(why) from exc
        if version is not None and self.on_activated is not None:  # loading a model: off the event loop
            await asyncio.to_thread(self.on_activated, model_id, version)
        log.info("job %s succeeded: model %s (%s)", job.id, model_id, reason)

    def _register(self, job_id: str, model_id: str, out: Path, activate: bool,
                  outcome: storage.JobOutcome) -> int | None:
        ckpt = checkpoint.load(out)
        blob = out.read_bytes()
        return self.store.jobs.finish_with_model(job_id, self.owner, model_id=model_id, checkpoint=blob,
                                                 sha256=storage.sha256_of(blob), created_at=ckpt.created_at,
                                                 info=info_of(ckpt), activate=activate, outcome=outcome)
