"""The model registry: shipped checkpoints in weights/, trained ones in the data directory, one active.

The active pointer lives in SQLite and survives restarts. Requests resolve a model once, to an object they
keep, so an activation (hot swap) lets requests in flight finish on the old model.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from model import checkpoint
from model.config import ModelConfig
from model.network import Seq2Seq

from .db import Database

log = logging.getLogger("seq2seq.registry")
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ACTIVE_KEY = "active_model"


class RegistryError(Exception):
    status = 400


class UnknownModel(RegistryError):
    status = 404


class ModelConflict(RegistryError):
    status = 409


class ModelUnavailable(RegistryError):
    status = 503


@dataclass(frozen=True)
class LoadedModel:
    id: str
    model: Seq2Seq
    config: ModelConfig
    device: torch.device


def check_model_id(model_id: str) -> str:
    if not MODEL_ID.match(model_id or ""):
        raise UnknownModel(f"model id {model_id!r} is not valid: letters, digits, '.', '_' and '-', at most 64")
    return model_id


def _info(ckpt: checkpoint.Checkpoint) -> dict:
    return {"name": ckpt.name, "hyperparameters": ckpt.config.to_dict(), "training": ckpt.train_config,
            "metrics": ckpt.metrics, "data": ckpt.data, "history_points": len(ckpt.history)}


class Registry:
    def __init__(self, db: Database, weights_dir: Path, models_dir: Path, device: torch.device,
                 default_model: str, keep_loaded: int = 4):
        self.db = db
        self.weights_dir = weights_dir
        self.models_dir = models_dir
        self.device = device
        self.device_note: str | None = None  # why the device differs from the one asked for
        self.default_model = default_model
        self.keep_loaded = keep_loaded
        self.broken: dict[str, str] = {}
        self.active: LoadedModel | None = None
        self.active_error: str | None = None
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()  # guards _loaded and _loading, held briefly
        self._loading: dict[str, threading.Lock] = {}  # one load per model at a time; others wait for it
        self.on_forget: list[Callable[[str], None]] = []  # told when a model id goes away
        models_dir.mkdir(parents=True, exist_ok=True)

    # -- discovery -------------------------------------------------------------------------------------
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
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO models(id, source, path, sha256, created_at, info) VALUES(?, 'shipped', ?, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET path=excluded.path, sha256=excluded.sha256, "
                    "created_at=excluded.created_at, info=excluded.info WHERE source='shipped'",
                    (model_id, str(path), ckpt.sha256, ckpt.created_at, json.dumps(_info(ckpt))))

    # -- reading ---------------------------------------------------------------------------------------
    def active_id(self) -> str:
        return self.db.get_state(ACTIVE_KEY) or self.default_model

    def _row(self, model_id: str):
        rows = self.db.query("SELECT * FROM models WHERE id = ?", (model_id,))
        if not rows:
            raise UnknownModel(f"model {model_id!r} is not registered")
        return rows[0]

    def _describe(self, row, active_id: str) -> dict:
        info = json.loads(row["info"])
        return {"id": row["id"], "created_at": row["created_at"], "active": row["id"] == active_id,
                "source": row["source"], "sha256": row["sha256"], **info}

    def list(self) -> list[dict]:
        active = self.active_id()
        rows = self.db.query("SELECT * FROM models ORDER BY created_at DESC, id")
        return [self._describe(r, active) for r in rows]

    def describe(self, model_id: str) -> dict:
        return self._describe(self._row(check_model_id(model_id)), self.active_id())

    # -- loading ---------------------------------------------------------------------------------------
    def _load(self, model_id: str) -> LoadedModel:
        with self._lock:
            if model_id in self._loaded:
                self._loaded.move_to_end(model_id)
                return self._loaded[model_id]
        row = self._row(model_id)  # unknown ids stop here, before they take a lock entry
        with self._lock:
            gate = self._loading.setdefault(model_id, threading.Lock())
        with gate:  # a second request for the same model waits here, then finds it loaded
            with self._lock:
                if model_id in self._loaded:
                    return self._loaded[model_id]
            try:
                ckpt = checkpoint.load(row["path"], "cpu")
            except checkpoint.CheckpointError as exc:  # the reason, not the file's path: clients see this
                raise ModelUnavailable(f"model {model_id!r} cannot be loaded: {exc.reason}") from exc
            finally:
                with self._lock:
                    self._loading.pop(model_id, None)
            model = self._to_device(ckpt.model)
            loaded = LoadedModel(model_id, model, ckpt.config, next(model.parameters()).device)
            with self._lock:
                self._loaded[model_id] = loaded
                while len(self._loaded) > self.keep_loaded:
                    oldest = next(iter(self._loaded))
                    if self.active is not None and oldest == self.active.id:
                        self._loaded.move_to_end(oldest)
                        oldest = next(iter(self._loaded))
                    del self._loaded[oldest]
            return loaded

    def _to_device(self, model: Seq2Seq) -> Seq2Seq:
        if self.device.type == "cpu":
            return model
        try:
            return model.to(self.device)
        except Exception as exc:  # a CUDA failure of any kind: serve on the CPU and say so
            self.device_note = f"loading on {self.device} failed ({exc}); serving on cpu"
            log.error(self.device_note)
            self.device = torch.device("cpu")
            return model.to("cpu")

    def resolve(self, model_id: str | None) -> LoadedModel:
        """The model a request will run on: the active one unless it names another."""
        if model_id is None:
            active = self.active
            if active is None:
                raise ModelUnavailable(self.active_error or "no model is loaded yet")
            return active
        check_model_id(model_id)
        active = self.active
        if active is not None and active.id == model_id:
            return active
        return self._load(model_id)

    async def resolve_async(self, model_id: str | None) -> LoadedModel:
        """resolve(), with a model that is not in memory loaded on a thread: the event loop never waits on disk."""
        if model_id is None:
            return self.resolve(None)
        check_model_id(model_id)
        active = self.active
        if active is not None and active.id == model_id:
            return active
        with self._lock:
            loaded = self._loaded.get(model_id)
        if loaded is not None:
            return loaded
        return await asyncio.to_thread(self._load, model_id)

    def load_active(self) -> None:
        model_id = self.active_id()
        try:
            self.active = self._load(model_id)
            self.active_error = None
            log.info("active model %s loaded on %s", model_id, self.active.device)
        except RegistryError as exc:
            self.active = None
            self.active_error = f"active model {model_id!r} could not be loaded: {exc}"
            log.error(self.active_error)

    # -- writing ---------------------------------------------------------------------------------------
    def activate(self, model_id: str) -> dict:
        """Load first, then move the pointer: a model that cannot load never becomes active."""
        check_model_id(model_id)
        loaded = self._load(model_id)
        self.db.set_state(ACTIVE_KEY, model_id)
        self.active = loaded
        self.active_error = None
        log.info("model %s activated", model_id)
        return self.describe(model_id)

    def register(self, model_id: str, path: Path) -> dict:
        """Verify a finished checkpoint by loading it, then record it. Unverifiable files are never registered."""
        check_model_id(model_id)
        ckpt = checkpoint.load(path)
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO models(id, source, path, sha256, created_at, info) VALUES(?, 'trained', ?, ?, ?, ?)",
                         (model_id, str(path), ckpt.sha256, ckpt.created_at, json.dumps(_info(ckpt))))
        return self.describe(model_id)

    def delete(self, model_id: str) -> None:
        row = self._row(check_model_id(model_id))
        if row["source"] == "shipped":
            raise ModelConflict(f"model {model_id!r} is shipped with the service and cannot be deleted")
        if model_id == self.active_id():
            raise ModelConflict(f"model {model_id!r} is active; activate another model first")
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
        with self._lock:
            self._loaded.pop(model_id, None)
        for path in (Path(row["path"]), checkpoint.manifest_path(Path(row["path"]))):
            path.unlink(missing_ok=True)
        for callback in self.on_forget:
            callback(model_id)
