"""The model this process serves, following the database's active pointer.

Every process follows the pointer (the storage watcher calls `follow` when any process moves it): it loads
the new model first, then swaps, so a request keeps the model object it resolved and one in flight finishes
on the model it started with (hot swap). Versions only move forward: a late caller never moves a process
back to an older model.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .. import storage
from ..errors import NotFound, Unavailable
from .loader import LoadedModel, Loader

log = logging.getLogger("seq2seq.registry")


class Follower:
    def __init__(self, loader: Loader, default_model: str):
        self.loader = loader
        self.default_model = default_model
        self.active: LoadedModel | None = None
        self.active_version = -1
        self.active_error: str | None = None  # why the pointer's model is not served, for /readyz
        self._swap = threading.Lock()  # activations and the watcher's swaps, one at a time

    def active_id(self) -> str | None:
        active = self.active
        return active.id if active is not None else None

    def follow(self, model_id: str | None, version: int) -> None:
        """Serve what the pointer says (at start, and whenever any process moves it): load, then swap."""
        model_id = model_id or self.default_model
        with self._swap:
            if self.active is not None and version <= self.active_version:
                return  # already serving this version or a newer one: a late caller must not move us back
            try:
                loaded = self.loader.load(model_id)
            except (NotFound, Unavailable, storage.NotFound, storage.IntegrityFailure) as exc:  # will not mend
                self.active_error = f"active model {model_id!r} could not be loaded: {exc}"
                log.error(self.active_error)  # keep serving the model already held, if any
                return
            self._serve(loaded, version)
        log.info("serving model %s (version %d) on %s", model_id, version, loaded.device)

    def activate(self, loaded: LoadedModel, move_pointer: Callable[[], int]) -> int:
        """Move the pointer to an already loaded model and serve it, under the swap lock, so the watcher cannot
        swap in between; returns the pointer's new version."""
        with self._swap:
            version = move_pointer()
            if version > self.active_version:
                self._serve(loaded, version)
        return version

    def _serve(self, loaded: LoadedModel, version: int) -> None:
        self.active, self.active_version, self.active_error = loaded, version, None
