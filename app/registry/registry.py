"""The model registry as this process sees it: one object over the catalogue (rows), the loader (models in
memory) and the follower (the active pointer), which the rest of the app uses.

Shipped checkpoints stay read-only files in weights/ (a row names the file); trained ones live in the
database as bytes beside their row. Requests resolve a model once, to an object they keep.

Blocking work runs on the registry's own lanes (app.offload), never on the event loop or asyncio's shared
pool: `loads` for models that requests name (at most `model_loads` at once, 503 with Retry-After beyond, and
one load per model however many requests wait for it), `db` for the routes' reads and changes.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from .. import storage
from ..device import Device
from ..errors import Unavailable
from ..offload import Lane
from .aliases import Aliases
from .catalogue import Catalogue, ModelInfo
from .follower import Follower
from .ids import check_model_id
from .loader import LoadedModel, Loader

log = logging.getLogger("seq2seq.registry")
LOADS_WAITING = 32  # distinct named models waiting for a load thread (one future per model)


class Registry:
    def __init__(self, store: storage.ModelStore, weights_dir: Path, device: Device, default_model: str,
                 keep_loaded: int = 4, *, model_loads: int = 2, failure_ttl_s: float = 30.0,
                 retry_s: float = 1.0, retry_max_s: float = 30.0, db_threads: int = 4, db_waiting: int = 64,
                 load_waiting: int = LOADS_WAITING):
        alias_store = storage.AliasStore(store.engine)
        self.catalogue = Catalogue(store, weights_dir, default_model, alias_store)
        self.loader = Loader(store, device, keep_loaded, pinned=lambda: self.follower.active_id(),  # never evicted
                             failure_ttl_s=failure_ttl_s, weights_dir=weights_dir)
        self.follower = Follower(self.loader, default_model, retry_s, retry_max_s)
        self.aliases = Aliases(alias_store, default_model, self.activate)  # production is the follower's pointer
        self.on_forget: list[Callable[[str], None]] = []  # told when a model id goes away
        # A few loads wait their turn (a load takes tens of milliseconds): clients cycling through more models than
        # are kept in memory queue briefly instead of failing; past that, 503 at once.
        self.loads = Lane("model-load", model_loads, load_waiting, f"{model_loads} models are being loaded and "
                          f"{load_waiting} more wait (SEQ2SEQ_MODEL_LOADS); try again shortly", retry_after=2)
        self.db = Lane("registry-db", db_threads, db_waiting, "the registry's database is not answering; "
                       "try again shortly", retry_after=5)
        self._pending: dict[str, asyncio.Future[LoadedModel]] = {}  # named models being loaded, one future each
        # Running rollouts' candidates: the database refuses to delete them while their rollout runs, so their
        # rows need no recheck, and a candidate's requests never wait on the database that the control's skip.
        self.held: frozenset[str] = frozenset()

    # -- what this process serves ----------------------------------------------------------------------
    @property
    def active(self) -> LoadedModel | None:
        return self.follower.active

    @property
    def active_version(self) -> int:
        return self.follower.active_version

    @property
    def active_error(self) -> str | None:
        return self.follower.active_error

    @property
    def degraded(self) -> str | None:
        """Why the served model is not the pointer's (a fallback), or None."""
        return self.follower.degraded

    @property
    def pointer_model(self) -> str | None:
        """The model the active pointer names, as this process last read it (None before it could)."""
        wanted = self.follower.wanted
        return wanted[0] if wanted is not None else None

    def follow(self, model_id: str | None, version: int) -> None:
        """The watcher's and the job runner's callback when the pointer moves."""
        self.follower.follow(model_id, version)

    def follow_aliases(self, version: int) -> None:
        """The watcher's callback when the other aliases change."""
        self.aliases.refresh(version)

    def load_active(self) -> None:
        """Serve the pointer's model (or a fallback, saying why), and keep retrying it while it cannot load."""
        self.follower.follow(*self.catalogue.pointer())
        self.follower.start_retrying()

    def serve_without_database(self, reason: str) -> None:
        """At a start without the database: the shipped default from weights/, degraded with the reason."""
        self.follower.fall_back(reason)

    def close(self) -> None:
        self.follower.stop_retrying()
        self.loads.close()
        self.db.close()

    # -- rows ------------------------------------------------------------------------------------------
    def sync_shipped(self) -> None:
        self.catalogue.sync_shipped()

    def active_id(self) -> str:
        return self.catalogue.active_id()

    def list(self) -> list[ModelInfo]:
        return self.catalogue.list()

    def describe(self, model_id: str) -> ModelInfo:
        return self.catalogue.describe(model_id)

    def describe_active(self) -> ModelInfo:
        return self.catalogue.describe(self.catalogue.active_id())

    # -- requests --------------------------------------------------------------------------------------
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
        return self.loader.load(model_id)

    async def resolve_async(self, model_id: str | None) -> LoadedModel:
        """resolve(), with a model that is not in memory loaded on a thread: the event loop never waits on it.
        A named model's row is looked at again at most once a second: another process may have deleted it."""
        if model_id is None:
            return self.resolve(None)
        check_model_id(model_id)
        active = self.active
        if active is not None and active.id == model_id:
            return active
        loaded = self.loader.cached(model_id)
        if loaded is not None:
            if self.loader.stale(model_id) and model_id not in self.held:
                await self.db.run(self._recheck, model_id)
            return loaded
        remembered = self.loader.failure(model_id)
        if remembered is not None:  # failed a moment ago: answered from memory, no database, no thread
            raise remembered
        pending = self._pending.get(model_id)
        if pending is None:  # the first request for it takes a load slot; the others wait for the same load
            pending = asyncio.ensure_future(self.loads.run(self.loader.load, model_id))
            self._pending[model_id] = pending
            pending.add_done_callback(lambda _: self._pending.pop(model_id, None))
        loaded = await asyncio.shield(pending)
        self.loader.seen(model_id)
        return loaded

    def hold(self, model_ids: frozenset[str]) -> None:
        """The candidates of the running rollouts this process follows (Rollouts.refresh)."""
        self.held = model_ids

    def _recheck(self, model_id: str) -> None:
        try:
            self.loader.recheck(model_id)
        except storage.NotFound:
            self.forget(model_id)  # and its cached answers
            raise

    # -- changes ---------------------------------------------------------------------------------------
    def activate(self, model_id: str, *, actor: str = "api", reason: str | None = None,
                 expected_generation: int | None = None) -> ModelInfo:
        """Load first, then move the pointer (production): a model that cannot load never becomes active. A failure
        remembered from a request is tried again: the operator may have mended it. expected_generation: the
        compare-and-swap of PUT /aliases/production (storage.StaleGeneration when it is not current)."""
        loaded = self.loader.load(check_model_id(model_id), fresh=True)
        version = self.follower.activate(loaded, lambda: self.catalogue.move_pointer(
            model_id, actor=actor, reason=reason, expected_generation=expected_generation))
        log.info("model %s activated (version %d) by %s", model_id, version, actor)
        return self.describe(model_id)

    def delete(self, model_id: str) -> None:
        self.catalogue.delete(model_id)
        self.forget(model_id)

    def forget(self, model_id: str) -> None:
        self.loader.drop(model_id)
        for callback in self.on_forget:
            callback(model_id)
