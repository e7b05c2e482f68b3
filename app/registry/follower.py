"""The model this process serves, following the database's active pointer.

Every process follows the pointer (the storage watcher calls `follow` when any process moves it): it loads
the new model first, then swaps, so a request keeps the model object it resolved and one in flight finishes
on the model it started with (hot swap). Versions only move forward: a late caller never moves a process
back to an older model.

When the pointer's model cannot be loaded (its bytes do not verify, its file differs on this machine, the
database is away), the process keeps serving the last good model it holds, or else the shipped default read
straight from weights/, and says so: `degraded` holds the reason, which /readyz reports. A retry thread tries
the pointer's model again with a doubling wait (capped), so a mended cause is picked up without anyone
moving the pointer; a new activation is tried at once.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .. import storage
from ..errors import ServiceError
from .loader import LoadedModel, Loader

log = logging.getLogger("seq2seq.registry")


def _reason(exc: Exception) -> str:
    """What /readyz (open to anyone) may say: the service's and storage's messages name models, never hosts or
    paths; anything else (a driver's error names the database's host) only by its type, with the rest logged."""
    if isinstance(exc, ServiceError):
        return exc.message
    if isinstance(exc, storage.StorageError):
        return str(exc)[:300]
    log.warning("loading the active model failed: %s", exc)
    return f"{type(exc).__name__} (the database or the file system failed; see the log)"


class Follower:
    def __init__(self, loader: Loader, default_model: str, retry_s: float = 1.0, retry_max_s: float = 30.0):
        self.loader = loader
        self.default_model = default_model
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.active: LoadedModel | None = None
        self.active_version = -1  # the pointer version the served model answers to; -1 for a fallback
        self.wanted: tuple[str, int] | None = None  # the pointer as last read: (model id, version)
        self.active_error: str | None = None  # why nothing is served, for /readyz (503)
        self.degraded: str | None = None  # why what is served is not the pointer's model, for /readyz (200)
        self._swap = threading.Lock()  # activations, the watcher's swaps and the retries, one at a time
        self._stop = threading.Event()
        self._retrier: threading.Thread | None = None

    def active_id(self) -> str | None:
        active = self.active
        return active.id if active is not None else None

    def behind(self) -> bool:
        """Whether the pointer names a model this process does not serve (it then serves a fallback, or nothing)."""
        wanted, active = self.wanted, self.active
        return wanted is not None and (active is None or self.active_version != wanted[1])

    def follow(self, model_id: str | None, version: int) -> None:
        """Serve what the pointer says (at start, and whenever any process moves it): load, then swap. Never
        raises: a model that cannot be loaded leaves a fallback served, the reason said, and a retry due."""
        model_id = model_id or self.default_model
        with self._swap:
            if self.wanted is not None and version <= self.wanted[1]:
                return  # already following this version or a newer one: a late caller must not move us back
            self.wanted = (model_id, version)
            self._try()

    def activate(self, loaded: LoadedModel, move_pointer: Callable[[], int]) -> int:
        """Move the pointer to an already loaded model and serve it, under the swap lock, so the watcher cannot
        swap in between; returns the pointer's new version."""
        with self._swap:
            version = move_pointer()
            if self.wanted is None or version > self.wanted[1]:
                self.wanted = (loaded.id, version)
                self._serve(loaded, version)
        return version

    def fall_back(self, reason: str) -> None:
        """Serve something while the pointer cannot be read at all (the database is away at start)."""
        with self._swap:
            if self.active is None:
                self._fall_back(reason)
            else:
                self.degraded = reason

    # -- the retry -------------------------------------------------------------------------------------
    def start_retrying(self) -> None:
        if self._retrier is None:
            self._retrier = threading.Thread(target=self._retry_loop, name="active-model-retry", daemon=True)
            self._retrier.start()

    def stop_retrying(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._retrier is not None:
            self._retrier.join(timeout)

    def retry(self) -> bool:
        """Try the pointer's model again if it is not served; whether it is served now."""
        with self._swap:
            return not self.behind() or self._try()

    def _retry_loop(self) -> None:
        delay = self.retry_s
        while not self._stop.wait(delay):
            if not self.behind():
                delay = self.retry_s
                continue
            delay = self.retry_s if self.retry() else min(delay * 2, self.retry_max_s)

    # -- internals (with _swap held) -------------------------------------------------------------------
    def _try(self) -> bool:
        assert self.wanted is not None
        model_id, version = self.wanted
        try:
            loaded = self.loader.load(model_id, fresh=True)
        except Exception as exc:  # the model's fault or the database's: either way, serve something and retry
            self._fall_back(f"active model {model_id!r} (version {version}) cannot be served: {_reason(exc)}")
            return False
        self._serve(loaded, version)
        log.info("serving model %s (version %d) on %s", model_id, version, loaded.device)
        return True

    def _fall_back(self, reason: str) -> None:
        if self.active is not None:  # the last good model, or the fallback already served, keeps serving
            how = ("the shipped {!r} from this machine's weights" if self.active_version < 0
                   else "{!r}, the last model that loaded").format(self.active.id)
            self.degraded = f"{reason}; serving {how} instead"
            log.error(self.degraded)
            return
        try:
            fallback = self.loader.load_shipped(self.default_model)
        except Exception as exc:
            self.active_error = f"{reason}; the shipped {self.default_model!r} cannot be served either: {_reason(exc)}"
            log.error(self.active_error)
            return
        self.active, self.active_version, self.active_error = fallback, -1, None
        self.degraded = f"{reason}; serving the shipped {self.default_model!r} from this machine's weights instead"
        log.error(self.degraded)

    def _serve(self, loaded: LoadedModel, version: int) -> None:
        self.active, self.active_version, self.active_error, self.degraded = loaded, version, None, None
