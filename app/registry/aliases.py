"""Aliases as this process sees them: the map requests resolve names with, and the API's reads and moves.

`production` is the active pointer, which the follower already serves, so it is never in the map: naming it is
naming no model. The other aliases are held in a map that the storage watcher refreshes whenever their version
moves (within its poll, or at once on PostgreSQL's NOTIFY), and that a move made here refreshes at once. A
request resolves a name with one dictionary lookup; the database is never read on the inference path.
"""
from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from .. import storage
from ..errors import Conflict, InvalidInput, NotFound
from ..storage import clock
from ..storage.aliases import HISTORY_LIMIT, PRODUCTION, AliasMove, AliasRow, AliasSnapshot, name_problem

log = logging.getLogger("seq2seq.registry")
Activate = Callable[..., object]  # Registry.activate(model_id, *, actor, reason, expected_generation)


def check_alias_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise InvalidInput("name", f"{name[:40]!r}: {problem}")
    return name


def parse_at(text: str) -> str:
    """An ISO-8601 time (a time without a zone is UTC) in the stores' one form; InvalidInput naming `at`."""
    try:
        when = datetime.fromisoformat(text.strip()) if len(text) <= 64 else None
    except ValueError:
        when = None
    if when is None:
        raise InvalidInput("at", f"{text[:64]!r} is not an ISO-8601 time, e.g. 2026-01-31T12:00:00Z")
    return clock.iso(when if when.tzinfo is not None else when.replace(tzinfo=UTC))


class Aliases:
    def __init__(self, store: storage.AliasStore, default_model: str, activate: Activate):
        self.store = store
        self.default_model = default_model  # what production names before any activation
        self._activate = activate
        self._held = AliasSnapshot(-1, {})
        self._lock = threading.Lock()

    # -- the map requests use (no database) ----------------------------------------------------------
    def target(self, name: str) -> AliasRow | None:
        """The alias `name` (not production) as this process last read it, or None if there is none."""
        return self._held.rows.get(name)

    @property
    def version(self) -> int:
        return self._held.version

    def refresh(self, version: int | None = None) -> None:
        """Read the aliases again (the watcher's callback when their version moves); never moves back."""
        found = self.store.snapshot()
        with self._lock:
            if found.version >= self._held.version:
                self._held = found

    # -- the API (blocking: on the registry's database lane) -------------------------------------------
    def list(self) -> list[AliasRow]:
        return [self._shown(row) for row in self.store.list()]

    def get(self, name: str, at: str | None = None) -> AliasRow:
        """The alias now, or (at: a time) what it named then, as its move in effect at that time left it."""
        if at is None:
            return self._shown(self.store.get(check_alias_name(name)))
        moves = self.history(name, at=at, limit=1)
        if not moves or moves[0].model is None:
            gone = "had been deleted" if moves else "did not exist yet"
            raise NotFound(f"alias {name!r} {gone} at {at}")
        move = moves[0]
        return AliasRow(name, move.model, move.generation, name == PRODUCTION, move.at)

    def history(self, name: str, *, at: str | None = None, limit: int = 100) -> builtins.list[AliasMove]:
        """Newest first; with `at`, the moves made at or before it (the first: what it named then). Production
        before its first recorded activation named the service's default model (generation 0)."""
        check_alias_name(name)
        moves = self.store.history(name, at=at, limit=min(limit, HISTORY_LIMIT))
        if name == PRODUCTION and len(moves) < limit and self._never_moved_before(moves):
            moves.append(AliasMove(PRODUCTION, 0, None, self.default_model, None, "the service's default model, "
                                   "before any activation", "service"))
        if not moves and name != PRODUCTION and at is None:
            self.store.get(name)  # NotFound for an alias that never existed
        return moves

    def _never_moved_before(self, moves: builtins.list[AliasMove]) -> bool:
        if moves:
            return moves[-1].generation == 1
        first = self.store.first_move(PRODUCTION)
        return first is None or first.generation == 1

    def put(self, name: str, model_id: str, *, expected_generation: int | None = None, reason: str | None = None,
            public: bool | None = None, actor: str = "api") -> AliasRow:
        check_alias_name(name)
        if name == PRODUCTION:
            if public is False:
                raise InvalidInput("public", "production is always public: it is what requests that name no model get")
            self._activate(model_id, actor=actor, reason=reason, expected_generation=expected_generation)
            return self._shown(self.store.get(PRODUCTION))
        moved = self.store.move(name, model_id, expected_generation=expected_generation, reason=reason, actor=actor,
                                public=public)
        self._refresh_quietly()
        log.info("alias %s moved to %s (generation %d) by %s", name, model_id, moved.generation, actor)
        return moved

    def delete(self, name: str, *, expected_generation: int | None = None, actor: str = "api") -> None:
        check_alias_name(name)
        if name == PRODUCTION:
            raise Conflict("production cannot be deleted: it names the active model; move it instead")
        self.store.delete(name, expected_generation=expected_generation, actor=actor, reason="deleted")
        self._refresh_quietly()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # committed already; the watcher brings the map up to date at its next look
            log.warning("aliases moved, but reading them back failed (%s); the watcher will", exc)

    def _shown(self, row: AliasRow) -> AliasRow:
        if row.name == PRODUCTION and row.model is None:
            return AliasRow(PRODUCTION, self.default_model, row.generation, True, row.updated_at)
        return row
