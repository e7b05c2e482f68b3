"""Models in memory: loaded from verified checkpoints, kept in a small LRU, moved to the granted device.

Every load checks the bytes again against the SHA-256 the registry's row recorded (a shipped file too: the row
is the authority, not the manifest beside the file), then loads them weights_only, so a row never vouches for
bytes that changed. Loads of one model are serialized (a second request waits for the first and finds it
loaded); loads of different models run side by side. A load that failed because of the model (unknown,
bytes that do not verify, unloadable) is remembered for `failure_ttl_s`, so asking again costs nothing until
then. A CUDA failure while moving a model serves it on the CPU and says so through the Device (/readyz).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from model import checkpoint
from model.config import ModelConfig
from model.network import Seq2Seq

from .. import storage
from ..device import Device
from ..errors import NotFound, ServiceError, Unavailable

log = logging.getLogger("seq2seq.registry")
T = TypeVar("T")
TRANSIENT_RETRY_S = 0.5
RECHECK_S = 1.0  # how stale a process's belief that a named model still exists may be
MODEL_FAILURES = (NotFound, Unavailable, storage.NotFound, storage.IntegrityFailure)  # the model's fault, not the database's


@dataclass(frozen=True)
class LoadedModel:
    id: str
    model: Seq2Seq
    config: ModelConfig
    device: torch.device


class Loader:
    """Thread-safe. `pinned` names the model eviction must skip (the one being served)."""

    def __init__(self, store: storage.ModelStore, device: Device, keep_loaded: int,
                 pinned: Callable[[], str | None], clock: Callable[[], float] = time.monotonic,
                 failure_ttl_s: float = 30.0, weights_dir: Path | None = None):
        self.store = store
        self.device = device
        self.keep_loaded = keep_loaded
        self.clock = clock  # seconds, for the recheck and the remembered failures
        self.failure_ttl_s = failure_ttl_s
        self.weights_dir = weights_dir
        self._failed: dict[str, tuple[float, ServiceError]] = {}  # model id -> (until, the error to answer with)
        self._pinned = pinned
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()  # guards _loaded and _loading, held briefly
        self._loading: dict[str, threading.Lock] = {}  # one load per model at a time; others wait for it
        self._seen: dict[str, float] = {}  # when each loaded model's row was last seen (clock())

    def cached(self, model_id: str) -> LoadedModel | None:
        with self._lock:
            return self._loaded.get(model_id)

    def failure(self, model_id: str) -> ServiceError | None:
        """The remembered reason a load of this model failed, while it is remembered (no database, no lock)."""
        failed = self._failed.get(model_id)
        if failed is None:
            return None
        until, error = failed
        remaining = until - self.clock()
        if remaining <= 0:
            self._failed.pop(model_id, None)
            return None
        if isinstance(error, NotFound):
            return NotFound(error.message)
        return Unavailable(error.message, retry_after=max(1.0, remaining))

    def load(self, model_id: str, fresh: bool = False) -> LoadedModel:
        """The model, from memory or loaded now (blocking: call it off the event loop). A failure remembered
        from an earlier load is raised again without trying, unless `fresh` (activation, the active model's retry)."""
        with self._lock:
            if model_id in self._loaded:
                self._loaded.move_to_end(model_id)
                return self._loaded[model_id]
        if not fresh and (remembered := self.failure(model_id)) is not None:
            raise remembered
        try:
            loaded = self._load(model_id)
        except MODEL_FAILURES as exc:
            self._remember(model_id, exc)
            raise
        self._failed.pop(model_id, None)
        return loaded

    def load_shipped(self, model_id: str) -> LoadedModel:
        """A shipped checkpoint straight from weights/, checked against its own manifest, without the database:
        what a process serves while the registry's model cannot be loaded or the database cannot be reached.
        Kept out of the LRU, so a later load by id still goes through the row's hash."""
        if self.weights_dir is None:
            raise Unavailable("no weights directory to fall back on")
        try:
            ckpt = checkpoint.load(self.weights_dir / f"{model_id}.pt", "cpu")
        except checkpoint.CheckpointError as exc:
            raise Unavailable(f"shipped model {model_id!r} cannot be loaded: {exc.reason}") from exc
        model = self._to_device(ckpt.model)
        return LoadedModel(model_id, model, ckpt.config, next(model.parameters()).device)

    def _remember(self, model_id: str, exc: Exception) -> None:
        if self.failure_ttl_s <= 0:
            return
        if isinstance(exc, (NotFound, storage.NotFound)):
            error: ServiceError = NotFound(str(exc))
        else:
            error = Unavailable(exc.message if isinstance(exc, ServiceError) else str(exc))
        with self._lock:
            self._failed[model_id] = (self.clock() + self.failure_ttl_s, error)
            if len(self._failed) > 1024:  # bounded however many ids are tried: the oldest go first
                for stale in list(self._failed)[: len(self._failed) - 1024]:
                    del self._failed[stale]

    def _load(self, model_id: str) -> LoadedModel:
        _once_more_if_transient(self.store.get, model_id)  # unknown ids stop here, before they take a lock entry
        with self._lock:
            gate = self._loading.setdefault(model_id, threading.Lock())
        with gate:  # a second request for the same model waits here, then finds it loaded
            with self._lock:
                if model_id in self._loaded:
                    return self._loaded[model_id]
            try:
                ckpt = _once_more_if_transient(self._read, model_id)
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
        """The checkpoint, verified again on the way in: the row's SHA-256, then a weights_only load."""
        row = self.store.get(model_id)
        if row.source == "shipped":
            try:  # this machine's file, which another machine's image may not share: the row's hash decides
                blob = Path(row.path or "").read_bytes()
            except OSError as exc:
                raise Unavailable(f"model {model_id!r} cannot be loaded: its shipped file is missing or "
                                  "unreadable on this machine") from exc
        else:
            try:
                blob = self.store.checkpoint_bytes(model_id)  # checks the row's hash
            except storage.IntegrityFailure as exc:
                raise Unavailable(f"model {model_id!r} cannot be loaded: its stored bytes do not match the "
                                  "SHA-256 the registry recorded") from exc
        if storage.sha256_of(blob) != row.sha256:
            raise Unavailable(f"model {model_id!r} cannot be loaded: its file's bytes do not match the SHA-256 "
                              "the registry recorded (a different or modified file on this machine)")
        try:
            return storage.load_checkpoint(blob, "cpu", f"{model_id}.pt")
        except storage.IntegrityFailure as exc:  # the reason, never a path
            raise Unavailable(f"model {model_id!r} cannot be loaded: {exc}") from exc

    def _to_device(self, model: Seq2Seq) -> Seq2Seq:
        if self.device.granted.type == "cpu":
            return model
        try:
            return model.to(self.device.granted)
        except Exception as exc:  # a CUDA failure of any kind: serve on the CPU and say so
            self.device.fall_back(str(exc))
            return model.to("cpu")


def _once_more_if_transient(read: Callable[[str], T], model_id: str) -> T:
    """A database restart or failover in progress passes in well under a second: one more try, shortly after."""
    try:
        return read(model_id)
    except Exception as exc:
        if not storage.transient(exc):
            raise
        time.sleep(TRANSIENT_RETRY_S)
        return read(model_id)
