"""The model registry as this process sees it: the database's rows, the models loaded in memory, the active one.

Shipped checkpoints stay read-only files in weights/ (a row names the file); trained ones live in the
database as bytes beside their row. The active pointer is one database row: activation moves it in a
transaction, and every process follows it (a watcher: LISTEN/NOTIFY on PostgreSQL, a version poll on
SQLite), loading the new model before it swaps. Requests resolve a model once, to an object they keep, so an
activation (hot swap) lets requests in flight finish on the model they started with.
"""
from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from model import checkpoint
from model.config import ModelConfig
from model.network import Seq2Seq

from .. import storage
from ..device import Device
from ..errors import NotFound, Unavailable

log = logging.getLogger("seq2seq.registry")
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RECHECK_S = 1.0  # how stale a process's belief that a named model still exists may be


@dataclass(frozen=True)
class LoadedModel:
    id: str
    model: Seq2Seq
    config: ModelConfig
    device: torch.device


def check_model_id(model_id: str) -> str:
    if not MODEL_ID.match(model_id or ""):
        raise NotFound(f"model id {model_id[:80]!r} is not valid: letters, digits, '.', '_' and '-', at most 64")
    return model_id


def info_of(ckpt: checkpoint.Checkpoint) -> dict:
    """What a registry row says about a checkpoint, so listing models never loads one."""
    return {"name": ckpt.name, "hyperparameters": ckpt.config.to_dict(), "training": ckpt.train_config,
            "metrics": ckpt.metrics, "data": ckpt.data, "history_points": len(ckpt.history)}


class Registry:
    def __init__(self, store: storage.ModelStore, weights_dir: Path, device: Device, default_model: str,
                 keep_loaded: int = 4):
        self.store = store
        self.weights_dir = weights_dir
        self.device = device
        self.default_model = default_model
        self.keep_loaded = keep_loaded
        self.broken: dict[str, str] = {}
        self.active: LoadedModel | None = None
        self.active_version = -1
        self.active_error: str | None = None
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()  # guards _loaded and _loading, held briefly
        self._loading: dict[str, threading.Lock] = {}  # one load per model at a time; others wait for it
        self._swap = threading.Lock()  # activations and the watcher's swaps, one at a time
        self.on_forget: list[Callable[[str], None]] = []  # told when a model id goes away
        self._confirmed: dict[str, float] = {}  # when each loaded model's row was last seen

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
            try:
                self.store.upsert_shipped(model_id, path, ckpt.sha256, ckpt.created_at, info_of(ckpt))
            except storage.Conflict as exc:
                self.broken[model_id] = str(exc)
                log.error("shipped model %s is not registered: %s", model_id, exc)

    # -- reading ---------------------------------------------------------------------------------------
    def active_id(self) -> str:
        return self.store.active()[0] or self.default_model

    def _describe(self, row: dict, pointer: str | None) -> dict:
        active = row["active"] or (pointer is None and row["id"] == self.default_model)
        return {"id": row["id"], "created_at": row["created_at"], "active": active, "source": row["source"],
                "sha256": row["sha256"], **row["info"]}

    def list(self) -> list[dict]:
        pointer = self.store.active()[0]
        return [self._describe(r, pointer) for r in self.store.list()]

    def describe(self, model_id: str) -> dict:
        row = self.store.get(check_model_id(model_id))
        return self._describe(row, self.store.active()[0])

    # -- loading ---------------------------------------------------------------------------------------
    def _read(self, model_id: str) -> checkpoint.Checkpoint:
        """The checkpoint, verified again on the way in: SHA-256, then a weights_only load."""
        row = self.store.get(model_id)
        try:
            if row["source"] == "shipped":
                return checkpoint.load(row["path"], "cpu")
            return storage.load_checkpoint(self.store.checkpoint_bytes(model_id), "cpu", f"{model_id}.pt")
        except (checkpoint.CheckpointError, storage.IntegrityFailure) as exc:  # the reason, never a path
            reason = exc.reason if isinstance(exc, checkpoint.CheckpointError) else "its stored bytes do not verify"
            raise Unavailable(f"model {model_id!r} cannot be loaded: {reason}") from exc

    def _load(self, model_id: str) -> LoadedModel:
        with self._lock:
            if model_id in self._loaded:
                self._loaded.move_to_end(model_id)
                return self._loaded[model_id]
        self.store.get(model_id)  # unknown ids stop here, before they take a lock entry
        with self._lock:
            gate = self._loading.setdefault(model_id, threading.Lock())
        with gate:  # a second request for the same model waits here, then finds it loaded
            with self._lock:
                if model_id in self._loaded:
                    return self._loaded[model_id]
            try:
                ckpt = self._read(model_id)
                model = self._to_device(ckpt.model)
            except BaseException:
                with self._lock:
                    self._loading.pop(model_id, None)
                raise
            loaded = LoadedModel(model_id, model, ckpt.config, next(model.parameters()).device)
            with self._lock:
                self._loaded[model_id] = loaded
                self._loading.pop(model_id, None)  # only now: a waiter finds the model, not a fresh gate
                while len(self._loaded) > self.keep_loaded:
                    oldest = next(iter(self._loaded))
                    if self.active is not None and oldest == self.active.id:
                        self._loaded.move_to_end(oldest)
                        oldest = next(iter(self._loaded))
                    del self._loaded[oldest]
            return loaded

    def _to_device(self, model: Seq2Seq) -> Seq2Seq:
        if self.device.granted.type == "cpu":
            return model
        try:
            return model.to(self.device.granted)
        except Exception as exc:  # a CUDA failure of any kind: serve on the CPU and say so
            self.device.fall_back(str(exc))
            return model.to("cpu")

    def resolve(self, model_id: str | None) -> LoadedModel:
        """The model a request will run on: the active one unless it names another."""
        if model_id is None:
            active = self.active
            if active is None:
                raise Unavailable(self.active_error or "no model is loaded yet")
            return active
        check_model_id(model_id)
        active = self.active
        if active is not None and active.id == model_id:
            return active
        return self._load(model_id)

    async def resolve_async(self, model_id: str | None) -> LoadedModel:
        """resolve(), with a model that is not in memory loaded on a thread: the event loop never waits on it."""
        if model_id is None:
            return self.resolve(None)
        check_model_id(model_id)
        active = self.active
        if active is not None and active.id == model_id:
            return active
        with self._lock:
            loaded = self._loaded.get(model_id)
        if loaded is not None:
            if time.monotonic() - self._confirmed.get(model_id, 0.0) > RECHECK_S:
                await asyncio.to_thread(self._confirm, model_id)
            return loaded
        loaded = await asyncio.to_thread(self._load, model_id)
        self._confirmed[model_id] = time.monotonic()
        return loaded

    def _confirm(self, model_id: str) -> None:
        """A model named by requests may have been deleted by another process: look at its row now and then,
        and forget it (memory and cached answers) once it is gone."""
        try:
            self.store.get(model_id)
        except storage.NotFound:
            self._confirmed.pop(model_id, None)
            self.forget(model_id)
            raise
        self._confirmed[model_id] = time.monotonic()

    def follow(self, model_id: str | None, version: int) -> None:
        """Serve what the pointer says (at start, and whenever any process moves it): load, then swap."""
        model_id = model_id or self.default_model
        with self._swap:
            if self.active is not None and version <= self.active_version:
                return  # already serving this version or a newer one: a late caller must not move us back
            try:
                loaded = self._load(model_id)
            except (NotFound, Unavailable, storage.NotFound, storage.IntegrityFailure) as exc:  # will not mend
                self.active_error = f"active model {model_id!r} could not be loaded: {exc}"
                log.error(self.active_error)  # keep serving the model already held, if any
                return
            self.active, self.active_version, self.active_error = loaded, version, None
        log.info("serving model %s (version %d) on %s", model_id, version, loaded.device)

    def load_active(self) -> None:
        self.follow(*self.store.active())

    # -- writing ---------------------------------------------------------------------------------------
    def activate(self, model_id: str) -> dict:
        """Load first, then move the pointer: a model that cannot load never becomes active."""
        check_model_id(model_id)
        loaded = self._load(model_id)
        with self._swap:
            version = self.store.activate(model_id)  # a transaction that also checks the row still exists
            if version > self.active_version:
                self.active, self.active_version, self.active_error = loaded, version, None
        log.info("model %s activated (version %d)", model_id, version)
        return self.describe(model_id)

    def delete(self, model_id: str) -> None:
        self.store.delete(check_model_id(model_id))  # refuses shipped and active models in the same transaction
        self.forget(model_id)

    def forget(self, model_id: str) -> None:
        with self._lock:
            self._loaded.pop(model_id, None)
        for callback in self.on_forget:
            callback(model_id)
