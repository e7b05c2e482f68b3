"""Models in memory: loaded from verified checkpoints, kept in a small LRU, moved to the granted device.

Every load checks the bytes again (SHA-256, then a weights_only load), so a row never vouches for a file
that changed. Loads of one model are serialized (a second request waits for the first and finds it loaded);
loads of different models run side by side. A CUDA failure while moving a model serves it on the CPU and
says so through the Device, which /readyz reports.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from model import checkpoint
from model.config import ModelConfig
from model.network import Seq2Seq

from .. import storage
from ..device import Device
from ..errors import Unavailable

log = logging.getLogger("seq2seq.registry")
RECHECK_S = 1.0  # how stale a process's belief that a named model still exists may be


@dataclass(frozen=True)
class LoadedModel:
    id: str
    model: Seq2Seq
    config: ModelConfig
    device: torch.device


class Loader:
    """Thread-safe. `pinned` names the model eviction must skip (the one being served)."""

    def __init__(self, store: storage.ModelStore, device: Device, keep_loaded: int,
                 pinned: Callable[[], str | None], clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.device = device
        self.keep_loaded = keep_loaded
        self.clock = clock  # seconds, for the recheck only
        self._pinned = pinned
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()  # guards _loaded and _loading, held briefly
        self._loading: dict[str, threading.Lock] = {}  # one load per model at a time; others wait for it
        self._seen: dict[str, float] = {}  # when each loaded model's row was last seen (clock())

    def cached(self, model_id: str) -> LoadedModel | None:
        with self._lock:
            return self._loaded.get(model_id)

    def load(self, model_id: str) -> LoadedModel:
        """The model, from memory or loaded now (blocking: call it off the event loop)."""
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
                self._evict()
            return loaded

    def drop(self, model_id: str) -> None:
        with self._lock:
            self._loaded.pop(model_id, None)
        self._seen.pop(model_id, None)

    # -- another process may delete a model this one holds -------------------------------------------
    def stale(self, model_id: str) -> bool:
        """Whether the model's row was last seen longer than RECHECK_S ago (or never)."""
        seen = self._seen.get(model_id)
        return seen is None or self.clock() - seen > RECHECK_S

    def seen(self, model_id: str) -> None:
        self._seen[model_id] = self.clock()

    def recheck(self, model_id: str) -> None:
        """Look at the row again; storage.NotFound (and the model dropped) once it is gone."""
        try:
            self.store.get(model_id)
        except storage.NotFound:
            self.drop(model_id)
            raise
        self.seen(model_id)

    # -- internals -------------------------------------------------------------------------------------
    def _evict(self) -> None:
        """Least recently used first, never the pinned model. Called with _lock held."""
        while len(self._loaded) > self.keep_loaded:
            oldest = next(iter(self._loaded))
            if oldest == self._pinned():
                self._loaded.move_to_end(oldest)
                oldest = next(iter(self._loaded))
            del self._loaded[oldest]

    def _read(self, model_id: str) -> checkpoint.Checkpoint:
        """The checkpoint, verified again on the way in: SHA-256, then a weights_only load."""
        row = self.store.get(model_id)
        try:
            if row.source == "shipped" and row.path is not None:
                return checkpoint.load(row.path, "cpu")
            return storage.load_checkpoint(self.store.checkpoint_bytes(model_id), "cpu", f"{model_id}.pt")
        except (checkpoint.CheckpointError, storage.IntegrityFailure) as exc:  # the reason, never a path
            reason = exc.reason if isinstance(exc, checkpoint.CheckpointError) else "its stored bytes do not verify"
            raise Unavailable(f"model {model_id!r} cannot be loaded: {reason}") from exc

    def _to_device(self, model: Seq2Seq) -> Seq2Seq:
        if self.device.granted.type == "cpu":
            return model
        try:
            return model.to(self.device.granted)
        except Exception as exc:  # a CUDA failure of any kind: serve on the CPU and say so
            self.device.fall_back(str(exc))
            return model.to("cpu")
