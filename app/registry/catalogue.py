"""The registry's rows as the API shows them: shipped checkpoints registered at start, models listed and
described without loading one, the pointer moved, trained models deleted."""
from __future__ import annotations

import builtins
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from model import checkpoint

from .. import storage
from ..storage.aliases import PRODUCTION
from .ids import MODEL_ID, check_model_id

log = logging.getLogger("seq2seq.registry")


class ModelInfo(BaseModel):
    """A registered model, as GET /models and the page read it."""

    id: str
    created_at: str = Field(description="when its checkpoint was written, ISO 8601")
    active: bool = Field(description="whether requests that name no model are served by it")
    source: storage.Source = Field(description="'shipped' (a read-only file in weights/) or 'trained' (a job's)")
    sha256: str = Field(description="of the checkpoint's bytes, checked at every load")
    name: str | None = Field(None, description="the name given at training, if any")
    hyperparameters: dict[str, Any] = Field(description="the network's shape")
    training: dict[str, Any] = Field(description="the training recipe it was trained with")
    metrics: dict[str, Any] = Field(description="held-out evaluation at the end of training")
    data: dict[str, Any] = Field(description="what it was trained on")
    history_points: int = Field(description="points on its training curve")
    aliases: list[str] = Field(default_factory=list, description="the aliases that name it (production: the active "
                                                                 "model)")
    live: dict[str, Any] | None = Field(None, description="GET /models/{id} only: live metrics across replicas "
                                        "(requests, errors, p50_ms, p99_ms, impressions_with_feedback, accepted, "
                                        "acceptance_rate, typed, hit_at_1, hit_at_3)")


def info_of(ckpt: checkpoint.Checkpoint) -> storage.CheckpointInfo:
    """What a registry row says about a checkpoint, so listing models never loads one."""
    return storage.CheckpointInfo(name=ckpt.name, hyperparameters=ckpt.config.to_dict(), training=ckpt.train_config,
                                  metrics=ckpt.metrics, data=ckpt.data, history_points=len(ckpt.history))


class Catalogue:
    def __init__(self, store: storage.ModelStore, weights_dir: Path, default_model: str,
                 aliases: storage.AliasStore | None = None):
        self.store = store
        self.aliases = aliases or storage.AliasStore(store.engine)
        self.weights_dir = weights_dir
        self.default_model = default_model
        self.broken: dict[str, str] = {}  # shipped files that could not be registered, and why

    def sync_shipped(self) -> None:
        """Register every checkpoint in weights/ (read-only); a broken one is reported, not fatal."""
        for path in sorted(self.weights_dir.glob("*.pt")):
            model_id = path.stem
            if not MODEL_ID.match(model_id):
                log.error("skipping shipped file %s: its name is not a valid model id", path.name)
                continue
            try:
                ckpt = checkpoint.load(path)
            except checkpoint.CheckpointError as exc:
                self.broken[model_id] = exc.reason
                log.error("shipped model %s is unusable: %s", model_id, exc)
                continue
            try:
                self.store.upsert_shipped(model_id, path, ckpt.sha256, ckpt.created_at, info_of(ckpt))
            except storage.Conflict as exc:
                self.broken[model_id] = str(exc)
                log.error("shipped model %s is not registered: %s", model_id, exc)
                continue
            if model_id == self.default_model:
                self.store.set_default(model_id)

    def pointer(self) -> tuple[str | None, int]:
        """(the model the pointer names, or None before any activation; its version)."""
        return self.store.active()

    def active_id(self) -> str:
        return self.pointer()[0] or self.default_model

    def list(self) -> list[ModelInfo]:
        pointer, names = self.pointer()[0], self.aliases.by_model()
        return [self._describe(row, pointer, names) for row in self.store.list()]

    def describe(self, model_id: str) -> ModelInfo:
        row = self.store.get(check_model_id(model_id))
        return self._describe(row, self.pointer()[0], self.aliases.by_model())

    def move_pointer(self, model_id: str, **how) -> int:
        """Point at the model (a transaction that also checks the row still exists, and records the move with
        `how`: actor, reason, expected_generation); the new version."""
        return self.store.activate(check_model_id(model_id), **how)

    def delete(self, model_id: str) -> None:
        self.store.delete(check_model_id(model_id))  # refuses shipped and active models in the same transaction

    def _describe(self, row: storage.ModelRow, pointer: str | None, names: dict[str, builtins.list[str]]) -> ModelInfo:
        info = row.info
        active = row.active or (pointer is None and row.id == self.default_model)
        aliases = names.get(row.id, [])
        if pointer is None and row.id == self.default_model:
            aliases = [PRODUCTION, *aliases]
        return ModelInfo(id=row.id, created_at=row.created_at, active=active, source=row.source, sha256=row.sha256,
                         name=info.name, hyperparameters=info.hyperparameters, training=info.training,
                         metrics=info.metrics, data=info.data, history_points=info.history_points, aliases=aliases)
