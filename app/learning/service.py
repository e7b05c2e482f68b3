"""The learning loop as this process runs it: the policy API, and a background look, on every serving process, at
each enabled policy (should a cycle start?) and at each open cycle (has its job ended, has its rollout?).

Every look is safe on any number of replicas at once: a cycle starts only through LearningStore.start_cycle (one
per threshold crossing, under the policy row's lock), and every advance is a conditional update on the status it
was read at, so whichever replica comes first moves the cycle and the others find it moved.

A cycle:
1. starts when the policy is on and `min_feedback` events arrived since the last cycle, or `max_interval_s` passed
   with any (or by hand, POST /learning/run). Its training set is built here (training_set.py) from the base
   corpus kept with the alias's model and the alias's usage, and queued as an ordinary job (`"trigger":
   "learning"`, activate never) that any worker runs; its body carries the usage holdout and the base sequences the
   training process scores the candidate on against the alias's model (model/gate.py);
2. when the job succeeds, the gate's verdict (in the model's metrics, `learning_gate`) decides: refused ends the
   cycle, passed starts a rollout of the candidate with the policy's steps (app/rollouts decides it as any);
3. when the rollout ends, its outcome (promoted, rolled back, aborted) and reason end the cycle.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from model.data import corpus_hash
from model.jobspec import Frequencies, JobError, build_spec

from .. import storage
from ..errors import Conflict, InvalidInput, NotFound
from ..jobs.progress import JobProgress
from ..jobs.service import shown_config
from ..offload import Lane
from ..settings import Settings
from ..storage import clock
from ..storage.checkpoints import load_checkpoint
from ..storage.learning import cycle_id
from . import training_set
from .policy import Policy

log = logging.getLogger("seq2seq.learning")
CORPUS_FILES = ("{id}.corpus.json", "corpus.json")  # a shipped model's corpus beside it, found by its digest
JOB_ATTEMPTS = 3  # a cycle's job survives two lost workers
CYCLES_SHOWN = 100
WIDTHS = {"minute": (16, 60), "hour": (13, 3600), "day": (10, 86400)}  # a bucket: characters of the time, seconds
BUCKETS = 60  # the acceptance series covers this many buckets back


class Learning:
    def __init__(self, store: storage.Storage, settings: Settings, *, wake: Callable[[], None] | None = None,
                 rollouts_changed: Callable[[], None] | None = None):
        self.store = store
        self.settings = settings
        self.default_model = settings.default_model
        self.wake = wake  # this instance's runner looks at the queue now
        self.rollouts_changed = rollouts_changed  # this process follows a rollout it started at once
        self.blocked: dict[str, str] = {}  # alias -> why its last due cycle could not start
        self.db = Lane("learning-db", 2, 16, "the learning loop's database is not answering; try again shortly",
                       retry_after=2)

    def close(self) -> None:
        self.db.close()

    # -- the API (blocking: on the lane) ---------------------------------------------------------------
    def policy(self, alias: str) -> dict[str, Any]:
        row = self.store.learning.policy(alias)
        policy = Policy(alias=alias) if row is None else Policy.of(alias, row.enabled, row.config)
        due = self.store.learning.due(alias, self.default_model)
        state: dict[str, Any] = {"stored": row is not None, "cycles": 0 if row is None else row.cycles,
                                 "enabled_at": None if row is None else row.enabled_at,
                                 "updated_at": None if row is None else row.updated_at,
                                 "last_cycle_at": None if row is None else row.last_cycle_at,
                                 "new_events": None if due is None else due.new_events,
                                 "open_cycle": None if due is None or due.open_cycle is None else due.open_cycle.id,
                                 "blocked": self.blocked.get(alias)}
        return {**policy.shown(), "state": state}

    def put(self, alias: str, given: dict[str, Any]) -> dict[str, Any]:
        row = self.store.learning.policy(alias)
        current = Policy(alias=alias) if row is None else Policy.of(alias, row.enabled, row.config)
        policy = current.updated(given)  # InvalidInput naming the field
        self.store.learning.put_policy(alias, policy.enabled, policy.config())
        log.info("learning policy of %s set: %s", alias, "on" if policy.enabled else "off")
        return self.policy(alias)

    def run_now(self, alias: str) -> dict[str, Any]:
        """A cycle by hand, whether the policy is on or not; Conflict while one is open."""
        if self.store.learning.policy(alias) is None:
            if self.store.learning.named(alias, self.default_model) is None:
                raise NotFound(f"alias {alias!r} does not exist")
            self.store.learning.put_policy(alias, False, Policy(alias=alias).config())
        started = self.trigger(alias, manual=True)
        assert started is not None  # a manual trigger raises rather than start nothing
        return self.shown(started)

    def acceptance(self, alias: str, width: str) -> dict[str, Any]:
        """Acceptance (and hit@3 where typed is known) over time per model, the last BUCKETS buckets."""
        chars, seconds = WIDTHS[width]
        since = clock.iso(self.store.rollouts.now() - timedelta(seconds=seconds * BUCKETS))
        series: dict[str, list[dict[str, Any]]] = {}
        for row in self.store.learning.acceptance(alias, self.default_model, chars, since):
            n, typed = row["impressions"], row["typed"]
            series.setdefault(row.pop("model"), []).append(
                {**row, "acceptance": round(row["accepted"] / n, 4) if n else None,
                 "hit_at_3": round(row["hit3"] / typed, 4) if typed else None})
        return {"alias": alias, "width": width, "series": [{"model": m, "points": p} for m, p in series.items()]}

    def cycles(self, alias: str | None = None, limit: int = CYCLES_SHOWN) -> list[dict[str, Any]]:
        return [self.shown(c) for c in self.store.learning.list(alias, limit)]

    def cycle(self, cycle: str) -> dict[str, Any]:
        try:
            return self.shown(self.store.learning.get(cycle))
        except storage.NotFound:
            raise NotFound(f"learning cycle {cycle[:64]!r} does not exist") from None

    def shown(self, c: storage.CycleRow) -> dict[str, Any]:
        view: dict[str, Any] = {
            "id": c.id, "alias": c.alias, "number": c.number, "trigger": c.trigger, "status": c.status,
            "outcome": c.outcome, "reason": c.reason, "control": c.control, "job_id": c.job_id,
            "candidate": c.candidate, "rollout_id": c.rollout_id,
            "feedback": {"after": c.feedback_after, "through": c.feedback_through}, "counts": c.counts,
            "data": c.data, "gate": c.gate, "created_at": c.created_at, "updated_at": c.updated_at,
            "ended_at": c.ended_at, "job": None}
        if c.open and c.job_id is not None:
            with contextlib.suppress(storage.NotFound):
                job = self.store.jobs.get(c.job_id)
                view["job"] = {"status": job.status, "attempt": job.attempt, "progress": job.progress}
        return view

    # -- the trigger -----------------------------------------------------------------------------------
    def trigger(self, alias: str, *, manual: bool = False) -> storage.CycleRow | None:
        """Start the alias's cycle if one is due (or by hand); the cycle, or None when none started here."""
        due = self.store.learning.due(alias, self.default_model)
        if due is None:
            if manual:
                raise NotFound(f"alias {alias!r} does not exist")
            return None
        policy = Policy.of(alias, due.policy.enabled, due.policy.config)
        if due.open_cycle is not None:
            if manual:
                raise Conflict(f"cycle {due.open_cycle.id!r} of alias {alias!r} has not ended yet; one at a time")
            return None
        kind = "manual" if manual else self._due(policy, due)
        if kind is None:
            return None
        try:
            new = self._build(alias, policy, due, kind)
            cycle, job = self.store.learning.start_cycle(
                alias, (due.policy.last_seq, due.policy.cycles), new, self.settings.job_queue,
                records=self.settings.max_job_records, trained_models=self.settings.max_trained_models)
        except storage.Unchanged as exc:  # another replica started it, or the policy moved: nothing to do here
            if manual:
                raise Conflict(str(exc)) from None
            return None
        except (Conflict, storage.QueueFull, storage.QuotaFull, storage.IntegrityFailure) as exc:
            self._block(alias, f"a due cycle could not start: {exc}")
            if manual:
                raise Conflict(f"the cycle could not start: {exc}") from None
            return None
        self.blocked.pop(alias, None)
        log.info("learning cycle %s (#%d) of %s started (%s): %d new events; job %s", cycle.id, cycle.number, alias,
                 kind, due.new_events, job.id)
        if self.wake is not None:
            self.wake()
        return cycle

    @staticmethod
    def _due(policy: Policy, due: storage.Due) -> str | None:
        if not policy.enabled or due.new_events < 1:
            return None
        if due.new_events >= policy.min_feedback:
            return "threshold"
        since = due.policy.last_cycle_at or due.policy.enabled_at
        if since is not None and (due.now - clock.parse(since)).total_seconds() >= policy.max_interval_s:
            return "interval"
        return None

    def _block(self, alias: str, why: str) -> None:
        if self.blocked.get(alias) != why:  # said once, not at every look
            log.warning("learning on %s: %s", alias, why)
        self.blocked[alias] = why

    def _build(self, alias: str, policy: Policy, due: storage.Due, kind: str) -> storage.NewCycle:
        """The cycle's training set and its job, from the alias's model and usage as read in `due`."""
        ckpt = load_checkpoint(self.store.models.checkpoint_bytes(due.control))
        base, source, frequencies = self._base_corpus(due.control, ckpt)
        if base is None:
            raise Conflict(f"the alias's model {due.control!r} keeps no training corpus to build on "
                           "(only corpus jobs' models, and shipped models with their corpus file, do)")
        events = self.store.learning.events(alias, self.default_model, due.newest_seq, policy.max_events)
        built = training_set.build(base, events, seq_length=ckpt.config.seq_length,
                                   vocab_size=ckpt.config.vocab_size, holdout_fraction=policy.holdout_fraction,
                                   session_cap=policy.session_cap, usage_weight=policy.usage_weight,
                                   max_usage_share=policy.max_usage_share)
        number = due.policy.cycles + 1
        new_id = cycle_id(datetime.now(UTC))
        try:
            # the base corpus's kind carries over: an exact table stays exact (usage is judged on its own holdout)
            spec = build_spec(model=ckpt.config.to_dict(), training=dict(policy.training), sequences=built.sequences,
                              activate="never", name=f"learning {alias} #{number}", max_attempts=JOB_ATTEMPTS,
                              frequencies=frequencies)
        except JobError as exc:
            raise Conflict(f"its job is not valid: {exc}") from None
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        suffix = secrets.token_hex(3)
        learning = {"control": due.control, "base_corpus": base, "holdout": [list(s) for s in built.holdout],
                    "base_eval": [list(s) for s in built.base_eval], "gate": asdict(policy.gate)}
        job = storage.NewJob(id=f"job-{stamp}-{suffix}", model_id=f"m-{stamp}-{suffix}",
                             config={**shown_config(spec), "trigger": "learning", "cycle": new_id, "alias": alias},
                             body={**spec.to_dict(), "learning": learning}, max_attempts=spec.max_attempts,
                             progress=JobProgress.queued(spec.training.steps).to_json())
        counts = {"new_events": due.new_events, **built.counts}
        return storage.NewCycle(new_id, kind, due.control, due.newest_seq, counts,
                                {**built.digests(base), "base_source": source}, job)

    def _base_corpus(self, model_id: str, ckpt) -> tuple[list[list[int]] | None, str, Frequencies]:
        """The corpus the model was trained on and what its counts are: kept in its checkpoint, else (a shipped
        model) a corpus file beside it in the weights directory whose digest the checkpoint records."""
        kept = ckpt.corpus_sequences()
        kind: Frequencies = "exact" if ckpt.data.get("frequencies") == "exact" else "sampled"
        if kept is not None:
            return kept, "checkpoint", kind
        digest = ckpt.data.get("sha256")
        for pattern in CORPUS_FILES:
            path: Path = self.settings.weights_dir / pattern.format(id=model_id)
            try:
                corpus = json.loads(path.read_text())
                sequences = corpus["sequences"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if digest is not None and corpus_hash(sequences) == digest:
                return sequences, f"weights/{path.name}", "exact" if corpus.get("frequencies") == "exact" else kind
        return None, "none", kind

    # -- advancing open cycles -------------------------------------------------------------------------
    def advance(self, cycle: storage.CycleRow) -> str | None:
        """Move an open cycle on if its job or rollout has ended; what happened, or None."""
        if cycle.status == "training":
            return self._after_training(cycle)
        if cycle.status == "rolling_out" and cycle.rollout_id is not None:
            try:
                rollout = self.store.rollouts.get(cycle.rollout_id)
            except storage.NotFound:
                return self._end(cycle, "failed", f"its rollout {cycle.rollout_id!r} is gone")
            if rollout.status == "running":
                return None
            reason = f"rollout {rollout.id} {rollout.status.replace('_', ' ')}: {rollout.reason or ''}".rstrip(": ")
            return self._end(cycle, rollout.status, reason)
        return None

    def _after_training(self, cycle: storage.CycleRow) -> str | None:
        try:
            job = self.store.jobs.get(cycle.job_id or "")
        except storage.NotFound:
            return self._end(cycle, "failed", f"its job {cycle.job_id!r} was deleted before it ended")
        if not job.ended:
            return None
        if job.status == "cancelled":
            return self._end(cycle, "cancelled", f"its job {job.id} was cancelled")
        if job.status == "failed":
            return self._end(cycle, "failed", f"its job {job.id} failed: {job.error or 'no reason recorded'}")
        try:
            model = self.store.models.get(cycle.candidate or "")
        except storage.NotFound:
            return self._end(cycle, "failed", f"its candidate {cycle.candidate!r} is not registered")
        gate = model.info.metrics.get("learning_gate")
        if not isinstance(gate, dict) or "passed" not in gate:
            return self._end(cycle, "failed", "its candidate has no offline gate figures")
        if not gate["passed"]:
            return self._end(cycle, "refused", str(gate.get("reason", "the offline gate refused it")), gate)
        row = self.store.learning.policy(cycle.alias)
        policy = Policy(alias=cycle.alias) if row is None else Policy.of(cycle.alias, row.enabled, row.config)
        config, percent = policy.rollout_config()
        rollout = self.store.learning.roll_out(cycle.id, gate, config=config, percent=percent,
                                               default_model=self.default_model)
        if rollout is None:
            return None
        log.info("learning cycle %s: the gate passed; rollout %s of %s on %s", cycle.id, rollout.id,
                 rollout.candidate, cycle.alias)
        if self.rollouts_changed is not None:
            with contextlib.suppress(Exception):  # the watcher catches up within a second anyway
                self.rollouts_changed()
        return "rolling_out"

    def _end(self, cycle: storage.CycleRow, outcome: str, reason: str, gate: dict | None = None) -> str | None:
        if self.store.learning.end(cycle.id, cycle.status, outcome, reason, gate):
            log.info("learning cycle %s of %s ended %s: %s", cycle.id, cycle.alias, outcome, reason)
            return outcome
        return None

    # -- the background look ---------------------------------------------------------------------------
    def look(self) -> None:
        """One look: every enabled policy's trigger, then every open cycle."""
        for policy in self.store.learning.policies():
            if policy.enabled:
                try:
                    self.trigger(policy.alias)
                except (InvalidInput, TypeError) as exc:  # a stored policy this version cannot read
                    self._block(policy.alias, f"its policy cannot be read: {exc}")
        for cycle in self.store.learning.open_cycles():
            self.advance(cycle)

    async def run(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.db.run(self.look)
            except Exception as exc:  # the database away, a bug: the next look tries again
                log.warning("the learning loop's look failed (%s: %s)", type(exc).__name__, str(exc)[:200])
