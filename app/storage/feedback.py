"""Feedback events, recorded once per impression, and the key that signs impressions.

`record` inserts a list of events in one transaction with INSERT ... ON CONFLICT DO NOTHING on the impression id
and answers, per event, whether it was new: a repeat (in an earlier call or earlier in the same list) adds no
row. `signing_key` creates the impressions' key once, whichever replica asks first (the same insert-or-nothing,
then a read), so every replica signs and verifies with the same key.
"""
from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from . import clock
from .engine import is_postgres, read, write
from .errors import NotFound
from .schema import feedback, meta

KEY_ROW = "impression_key"  # storage_meta: the impressions' signing key, hex


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One verified event, as the store writes it."""

    impression_id: str
    model_id: str
    prefix: tuple[int, ...]
    k: int
    suggestions: int
    session: str | None
    accepted: tuple[int, ...] | None
    accepted_rank: int | None
    typed: tuple[int, ...] | None
    typed_rank: int | None
    impression_at: str  # clock.iso
    # (rollout id, step, arm) when the impression was served under a rollout: what the live counters count it under
    rollout: tuple[str, int, str] | None = field(default=None, kw_only=True, compare=False)


@dataclass(frozen=True, slots=True)
class FeedbackRow(FeedbackEvent):
    seq: int
    received_at: str


def _insert(conn: Connection):
    return (postgresql.insert if is_postgres(conn) else sqlite.insert)(feedback)


def _json(tokens: tuple[int, ...] | None) -> str | None:
    return None if tokens is None else json.dumps(list(tokens), separators=(",", ":"))


class FeedbackStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def signing_key(self) -> bytes:
        """The impressions' key: created by the first replica that asks, read by every other."""
        with write(self.engine) as conn:
            insert = postgresql.insert(meta) if is_postgres(conn) else sqlite.insert(meta)
            conn.execute(insert.values(key=KEY_ROW, value=secrets.token_hex(32)).on_conflict_do_nothing())
            return bytes.fromhex(conn.execute(sa.select(meta.c.value).where(meta.c.key == KEY_ROW)).scalar_one())

    def record(self, events: Sequence[FeedbackEvent]) -> list[bool]:
        """Per event, True if this call recorded it, False if its impression already had feedback."""
        fresh: dict[str, FeedbackEvent] = {}
        for event in events:
            fresh.setdefault(event.impression_id, event)
        if not fresh:
            return []
        inserted: set[str] = set()
        with write(self.engine) as conn:
            now = clock.iso(clock.db_now(conn))
            rows = [{"impression_id": e.impression_id, "model_id": e.model_id, "prefix": _json(e.prefix), "k": e.k,
                     "suggestions": e.suggestions, "session": e.session, "accepted": _json(e.accepted),
                     "accepted_rank": e.accepted_rank, "typed": _json(e.typed), "typed_rank": e.typed_rank,
                     "impression_at": e.impression_at, "received_at": now} for e in fresh.values()]
            # Rows as executemany parameters, not .values(rows): one statement shape, compiled once and cached
            # (SQLAlchemy writes the multi-row VALUES itself, "insertmanyvalues"); a .values(rows) statement was
            # compiled anew for every group, ~0.5 ms a row of CPU next to a busy event loop.
            statement = (_insert(conn).on_conflict_do_nothing(index_elements=["impression_id"])
                         .returning(feedback.c.impression_id))
            inserted.update(conn.execute(statement, rows).scalars())
        answers = []
        for event in events:  # the first of a repeated id in this list is the one recorded
            answers.append(event.impression_id in inserted)
            inserted.discard(event.impression_id)
        return answers

    def get(self, impression_id: str) -> FeedbackRow:
        with read(self.engine) as conn:
            row = conn.execute(sa.select(feedback).where(feedback.c.impression_id == impression_id)).mappings().first()
        if row is None:
            raise NotFound(f"no feedback for impression {impression_id[:64]!r}")
        return _row(row)

    def delete_session(self, session: str) -> int:
        """Forget every event of one session (a user's request); how many there were."""
        with write(self.engine) as conn:
            return conn.execute(sa.delete(feedback).where(feedback.c.session == session)).rowcount

    def count(self, model_id: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(feedback)
        if model_id is not None:
            query = query.where(feedback.c.model_id == model_id)
        with read(self.engine) as conn:
            return conn.execute(query).scalar_one()


def _tokens(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else tuple(json.loads(text))


def _row(row) -> FeedbackRow:
    return FeedbackRow(impression_id=row["impression_id"], model_id=row["model_id"],
                       prefix=tuple(json.loads(row["prefix"])), k=row["k"], suggestions=row["suggestions"],
                       session=row["session"], accepted=_tokens(row["accepted"]), accepted_rank=row["accepted_rank"],
                       typed=_tokens(row["typed"]), typed_rank=row["typed_rank"], impression_at=row["impression_at"],
                       seq=row["seq"], received_at=row["received_at"])
