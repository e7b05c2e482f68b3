"""Impressions minted into answers and feedback on them, checked and recorded.

The signing key is shared by every replica: SEQ2SEQ_IMPRESSION_KEY when set, else a row the first replica
creates in the database (FeedbackStore.signing_key). It is read once at start; a replica that started without its
database reads it once the database answers (app.main), and until then mints no impressions and answers feedback
with 503. Database calls run on a lane of their own (app.offload), so a database that stops answering holds
neither the event loop nor other lanes' threads.

Events are written by one writer at a time, in groups: what arrives while a transaction runs goes into the next
one. Each request still waits for the commit that holds its events; under load a transaction carries many
events instead of many transactions queueing for SQLite's one write lock (whose busy-wait backs off by
sleeping: four writers measured 120 events/s against a target of 500).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from ..errors import InvalidInput, Unavailable
from ..offload import Lane
from ..storage import FeedbackEvent, FeedbackStore
from ..storage.clock import iso
from .impressions import Expired, Forged, Impression, MacName, Signer

log = logging.getLogger("seq2seq.feedback")
DATABASE_DOWN = (sa.exc.DBAPIError, OSError)
MAX_WAITING = 20_000  # events waiting for the writer; past it 503
NO_KEY = ("impressions cannot be checked yet: this replica has not reached its database since it started; "
          "try again shortly")


class Impressions:
    def __init__(self, store: FeedbackStore, enabled: bool, key: str | None, ttl_s: float,
                 mac: MacName = "blake2b"):
        self.store = store
        self.enabled = enabled
        self.ttl_s = ttl_s
        self.mac: MacName = mac
        self._given = key.encode() if key else None
        self.signer: Signer | None = Signer(self._given, ttl_s, mac) if self._given else None
        self.db = Lane("feedback-db", 2, 16, "the feedback database is not answering; try again shortly",
                       retry_after=2)
        self._waiting: list[tuple[Sequence[FeedbackEvent], asyncio.Future[list[bool]]]] = []
        self._waiting_events = 0
        self._writer: asyncio.Task | None = None

    # -- minting, on the hot path --------------------------------------------------------------------------
    @property
    def minting(self) -> bool:
        return self.enabled and self.signer is not None

    def mint(self, facts: bytes, session: str | None, tag: bytes | None = None) -> bytes | None:
        signer = self.signer
        if signer is None or not self.enabled:
            return None
        raw = session.encode() if session else b""
        return signer.plain(facts, raw) if tag is None else signer.mint(facts, raw, None, tag)

    # -- the key ---------------------------------------------------------------------------------------------
    def load_key(self) -> None:
        """Blocking: the database's key (created if none yet), unless one was given."""
        if self.signer is None:
            self.signer = Signer(self.store.signing_key(), self.ttl_s, self.mac)

    async def load_key_async(self) -> Signer:
        if self.signer is None:
            try:
                await self.db.run(self.load_key)
            except DATABASE_DOWN as exc:
                log.warning("the impressions' key cannot be read (%s)", type(exc).__name__)
                raise Unavailable(NO_KEY, retry_after=2) from None
        assert self.signer is not None
        return self.signer

    # -- feedback -------------------------------------------------------------------------------------------
    def check(self, signer: Signer, token: str, accepted: Sequence[int] | None,
              typed: Sequence[int] | None) -> FeedbackEvent:
        """The event to record; InvalidInput naming `impression` (forged, expired) or `accepted` (not shown)."""
        try:
            impression = signer.verify(token)
        except (Forged, Expired) as exc:
            raise InvalidInput("impression", str(exc)) from None
        accepted_rank = None
        if accepted is not None:
            accepted_rank = impression.rank_of(accepted)
            if accepted_rank is None:
                raise InvalidInput("accepted", f"is not one of the {len(impression.digests)} suggestions of this "
                                               "impression")
        return _event(impression, accepted, accepted_rank, typed)

    async def record(self, events: Sequence[FeedbackEvent]) -> list[bool]:
        """Committed before it returns: per event, True if recorded now, False if its impression had feedback."""
        if self._waiting_events + len(events) > MAX_WAITING:
            raise Unavailable(f"{self._waiting_events} feedback events are waiting to be written; try again shortly",
                              retry_after=2)
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((events, future))
        self._waiting_events += len(events)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return await future

    async def _write(self) -> None:
        """Until nothing waits: everything waiting, in one transaction; each caller gets its events' answers."""
        try:
            while self._waiting:
                group, self._waiting, self._waiting_events = self._waiting, [], 0
                try:
                    answers = await self.db.run(self.store.record, [e for events, _ in group for e in events])
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                at = 0
                for events, future in group:
                    if not future.done():  # a caller that left: its events are committed all the same
                        future.set_result(answers[at:at + len(events)])
                    at += len(events)
        finally:
            self._writer = None

    def close(self) -> None:
        self.db.close()


def _event(impression: Impression, accepted: Sequence[int] | None, accepted_rank: int | None,
           typed: Sequence[int] | None) -> FeedbackEvent:
    return FeedbackEvent(
        impression_id=impression.id, model_id=impression.model, prefix=impression.prefix, k=impression.k,
        suggestions=len(impression.digests), session=impression.session,
        accepted=tuple(accepted) if accepted is not None else None, accepted_rank=accepted_rank,
        typed=tuple(typed) if typed is not None else None,
        typed_rank=impression.rank_of(typed) if typed is not None else None,
        impression_at=iso(datetime.fromtimestamp(impression.issued, UTC)), rollout=impression.rollout)
