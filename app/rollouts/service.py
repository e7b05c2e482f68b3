"""Rollouts as this process runs them: the running ones it routes by, the API's reads and changes, the decider,
the live counters' flush and the shadow's decodes.

Routing never reads the database: the running rollouts are held in a map that the storage watcher refreshes
whenever `aliases_version` moves (every rollout change bumps it), and that a change made here refreshes at once.
Each replica, about every `decide_s`, reads the counters of each running rollout and asks `decision.decide`; a
hold changes nothing, anything else is applied by `RolloutStore.decide`, which asks again under the database's
lock and applies it only if no replica did first. The counters are flushed every `flush_s` on the same lane.

A shadow rollout sends no traffic to its candidate. A sample of the alias's /topk requests (`sample`, by
`split.shadow_sampled` on the session and prefix) is decoded again with the candidate in the background (a
bounded queue: dropped when full), which counts the candidate's requests, errors and latency; their impressions
say so, and feedback with `typed` on such an impression has the candidate's suggestions for the same prefix (the
model is deterministic: the response cache usually holds them) ranked against what the user typed. The metric a
shadow is judged on is hit@3 (typed among the first three suggestions) for both arms; it rolls back on the
guardrails and the test like any rollout, and is promoted only by hand.
"""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ..errors import InvalidInput, NotFound
from ..feedback.impressions import rollout_tag
from ..metrics import Metrics
from ..offload import Lane
from ..storage import FeedbackEvent, Outcome, RolloutRow, RolloutStore
from ..storage.rollouts import step_seconds
from . import live
from .decision import Action, ArmStats, Guardrails, RolloutConfig, StepStats, decide
from .sequential import compare, proportion_interval
from .split import Arm, choose_arm, shadow_sampled

log = logging.getLogger("seq2seq.rollouts")
SHADOW_QUEUE = 64  # shadow decodes waiting; past it they are dropped
DEFAULT_SAMPLE = 0.1


@dataclass(frozen=True, slots=True)
class Running:
    """A running rollout as routing needs it."""
    id: str
    alias: str
    candidate: str
    step: int
    percent: float
    shadow: bool
    sample: float


@dataclass(frozen=True, slots=True)
class Served:
    """Where one inference request goes: the model to serve (None: production's active model), the answer's opening,
    and the rollout and arm it counts under."""
    model: str | None
    head: bytes
    rollout: Running | None = None
    arm: str | None = None  # control, candidate; "shadow" for the control's answers sampled for the shadow

    @property
    def tag(self) -> bytes | None:
        return None if self.rollout is None or self.arm is None else rollout_tag(self.rollout.id, self.rollout.step,
                                                                                  self.arm)


def config_of(given: dict[str, Any]) -> tuple[RolloutConfig, float]:
    """A RolloutConfig from the API's fields (absent ones defaulted), and the shadow's sample rate; InvalidInput
    naming the field."""
    given = dict(given)
    sample = given.pop("sample", None)
    sample = DEFAULT_SAMPLE if sample is None else sample
    if not 0 < sample <= 1:
        raise InvalidInput("sample", f"must be within (0, 1], not {sample}")
    guard = {k: v for k, v in (given.pop("guardrails", None) or {}).items()
             if v is not None or k in ("error_rate", "p99_ratio")}  # null switches those two off
    kwargs = {k: v for k, v in given.items() if v is not None or k == "promote_margin"}
    if "steps" in kwargs:
        kwargs["steps"] = tuple(kwargs["steps"])
    return RolloutConfig(guardrails=Guardrails(**guard), **kwargs), sample


def config_json(config: RolloutConfig, sample: float) -> dict[str, Any]:
    out = asdict(config)
    out["steps"] = list(config.steps)
    out["sample"] = sample
    return out


def config_from_json(stored: dict[str, Any]) -> RolloutConfig:
    stored = {k: v for k, v in stored.items() if k != "sample"}
    return RolloutConfig(guardrails=Guardrails(**stored.pop("guardrails", {})), steps=tuple(stored.pop("steps")),
                         **stored)


def _arm_stats(counters: dict[str, int], shadow: bool) -> ArmStats:
    """The decision's view of one arm in one step: for a shadow rollout, impressions with `typed` and hit@3."""
    if shadow:
        impressions, accepted = counters.get("typed", 0), counters.get("hit3", 0)
    else:
        impressions, accepted = counters.get("feedback", 0), counters.get("accepted", 0)
    requests = counters.get("requests", 0)
    return ArmStats(requests, min(counters.get("errors", 0), requests), impressions, min(accepted, impressions),
                    live.percentile_ms(counters, 0.99))


def history_of(row: RolloutRow, counters: dict[str, dict[str, int]]) -> list[StepStats]:
    other = "shadow" if row.shadow else "candidate"
    return [StepStats(_arm_stats(counters.get(live.arm_subject(row.id, s, "control"), {}), row.shadow),
                      _arm_stats(counters.get(live.arm_subject(row.id, s, other), {}), row.shadow))
            for s in range(row.step + 1)]


def judge(row: RolloutRow, counters: dict[str, dict[str, int]], now: datetime) -> Outcome | None:
    """The decider's verdict on a running rollout, as an Outcome to apply, or None to hold."""
    config = config_from_json(row.config)
    if row.step >= config.running_steps:
        return None
    decision = decide(config, history_of(row, counters), step_seconds(row, now))
    if decision.action == Action.HOLD:
        return None
    if row.shadow and decision.action != Action.ROLL_BACK:
        return None  # a shadow takes no traffic, so it has no steps; it is promoted by hand
    return Outcome(str(decision.action), decision.step, decision.percent, decision.reason, decision.figures,
                   decision.cause)


class Rollouts:
    def __init__(self, store: RolloutStore, metrics: Metrics, default_model: str, *, decide_s: float = 1.0,
                 flush_s: float = 1.0):
        self.store = store
        self.default_model = default_model
        self.metrics = metrics
        self.live = live.Live()
        self.decide_s = decide_s
        self.flush_s = flush_s
        self.db = Lane("rollouts-db", 2, 32, "the rollouts' database is not answering; try again shortly",
                       retry_after=2)
        self._running: dict[str, Running] = {}
        self._by_id: dict[str, Running] = {}
        self._shadow: asyncio.Queue | None = None
        self.topk: Callable[..., Any] | None = None  # engine.topk, set once the engine exists (the shadow's decodes)
        self.load: Callable[[str], Any] | None = None  # a blocking load of a model (a manual promotion loads first)
        self.hold: Callable[[frozenset[str]], None] | None = None  # tells the registry which candidates are held

    # -- the map requests use (no database) ----------------------------------------------------------
    def on(self, alias: str) -> Running | None:
        return self._running.get(alias)

    def running_ids(self) -> dict[str, Running]:
        return self._by_id

    def refresh(self, version: int | None = None) -> None:
        """Read the running rollouts again (the watcher's callback when the aliases' version moves)."""
        rows, _ = self.store.running()
        found = {row.alias: Running(row.id, row.alias, row.candidate, row.step, row.percent, row.shadow,
                                    float(row.config.get("sample", DEFAULT_SAMPLE))) for row in rows}
        fresh = [r for r in found.values() if r.id not in self._by_id]
        for rollout in fresh:  # loaded before its first request is routed to it, so its latency is not a cold start's
            self._preload(rollout.candidate)
        if self.hold is not None:  # undeletable while their rollout runs: no once-a-second recheck on their requests
            self.hold(frozenset(r.candidate for r in found.values()))
        self._running, self._by_id = found, {r.id: r for r in found.values()}

    def _preload(self, model_id: str) -> None:
        if self.load is None:
            return
        try:
            self.load(model_id)
        except Exception as exc:  # its requests will fail and count as errors: the guardrail's business
            log.warning("rollout candidate %s cannot be loaded: %s", model_id, exc)

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception as exc:  # committed already: the watcher catches up at its next look
            log.warning("a rollout changed, but reading the rollouts back failed (%s); the watcher will", exc)

    def route(self, alias: str, control: str | None, head: bytes, session: str | None,
              shadow_key: str | None = None) -> Served:
        """The arm of one request to `alias` (whose model is `control`; None for production's)."""
        rollout = self._running.get(alias)
        if rollout is None:
            return Served(control, head)
        if rollout.shadow:
            sampled = shadow_key is not None and shadow_sampled(
                rollout.id, rollout.sample, f"{session}\x00{shadow_key}" if session is not None else None)
            arm = "shadow" if sampled else Arm.CONTROL.value
            model = control
        else:
            arm = choose_arm(rollout.id, rollout.percent, session).value
            model = rollout.candidate if arm == Arm.CANDIDATE.value else control
        shown = "control" if arm == "shadow" else arm
        return Served(model, head[:-1] + b',"rollout":"' + rollout.id.encode() + b'","arm":"' + shown.encode()
                      + b'",', rollout, arm)

    # -- counting, on the event loop -------------------------------------------------------------------
    def served(self, served: Served, model_id: str | None, status: int, seconds: float) -> None:
        subjects = [live.model_subject(model_id)] if model_id is not None else []
        arm = "none"
        if served.rollout is not None and served.arm is not None:
            arm = "control" if served.arm == "shadow" else served.arm
            subjects.append(live.arm_subject(served.rollout.id, served.rollout.step, arm))
        self.live.request(subjects, status >= 500, seconds)
        self.metrics.observe_arm(arm, status, seconds)
        if model_id is not None:
            self.metrics.observe_model(model_id, status, seconds)

    def feedback(self, events: list[FeedbackEvent]) -> None:
        """Events just recorded (new ones only): counted per model, per arm, and scored for a shadow."""
        for event in events:
            subjects = [live.model_subject(event.model_id)]
            arm = "none"
            if event.rollout is not None:
                rollout_id, step, tagged = event.rollout
                arm = "control" if tagged == "shadow" else tagged
                subjects.append(live.arm_subject(rollout_id, step, arm))
                if tagged == "shadow" and event.typed is not None:
                    self._enqueue_shadow(("score", rollout_id, step, list(event.prefix), event.k, event.typed))
            self.live.feedback(subjects, event.accepted_rank is not None, event.typed_rank, event.typed is not None)
            self.metrics.observe_arm_feedback(arm, event.accepted_rank is not None)

    def shadow_request(self, served: Served, prefix: list[int], k: int) -> None:
        """After a sampled answer: decode it again with the candidate, in the background."""
        if served.rollout is not None and served.arm == "shadow":
            self._enqueue_shadow(("decode", served.rollout.id, served.rollout.step, prefix, k, None))

    def _enqueue_shadow(self, item: tuple) -> None:
        if self._shadow is None:
            return
        try:
            self._shadow.put_nowait(item)
        except asyncio.QueueFull:
            self.metrics.shadow_dropped.inc()

    async def _shadow_worker(self) -> None:
        assert self._shadow is not None
        while True:
            kind, rollout_id, step, prefix, k, typed = await self._shadow.get()
            rollout = self._by_id.get(rollout_id)
            if rollout is None or self.topk is None:
                continue
            subject = live.arm_subject(rollout_id, step, "shadow")
            start = time.perf_counter()
            try:
                body = await self.topk(rollout.candidate, prefix, k, "prefix")
            except Exception as exc:
                if kind == "decode":
                    failed = not isinstance(exc, (InvalidInput, NotFound))
                    self.live.request([subject, live.model_subject(rollout.candidate)], failed,
                                      time.perf_counter() - start)
                    self.metrics.observe_arm("shadow", 503 if failed else 422, time.perf_counter() - start)
                continue
            if kind == "decode":
                seconds = time.perf_counter() - start
                self.live.request([subject, live.model_subject(rollout.candidate)], False, seconds)
                self.metrics.observe_arm("shadow", 200, seconds)
            else:
                sequences = [s["sequence"] for s in json.loads(body)["suggestions"]]
                rank = sequences.index(list(typed)) + 1 if list(typed) in sequences else None
                self.live.feedback([subject], None, rank, True)
                self.metrics.observe_arm_feedback("shadow", rank is not None and rank <= 3)

    # -- the API (blocking: on the lane) ---------------------------------------------------------------
    def start(self, alias: str, candidate: str, shadow: bool, given: dict[str, Any]) -> dict[str, Any]:
        config, sample = config_of(given)
        row = self.store.start(alias=alias, candidate=candidate, config=config_json(config, sample),
                               percent=0.0 if shadow else config.steps[0], shadow=shadow,
                               default_model=self.default_model)
        self._refresh_quietly()
        log.info("rollout %s started on %s: candidate %s", row.id, alias, candidate)
        return self.view(row.id)

    def promote(self, rollout_id: str) -> dict[str, Any]:
        row = self.store.get(rollout_id)
        if row.status == "running" and self.load is not None:
            self.load(row.candidate)  # a candidate that cannot load never becomes what the alias names (raises)
        self.store.end(rollout_id, Outcome("promote", row.step, 100.0, "promoted by hand (POST /rollouts/ID/promote)",
                                           self._figures(row), actor="api"))
        self._refresh_quietly()
        return self.view(rollout_id)

    def abort(self, rollout_id: str) -> dict[str, Any]:
        row = self.store.get(rollout_id)
        self.store.end(rollout_id, Outcome("abort", row.step, 0.0, "aborted by hand (POST /rollouts/ID/abort): "
                                           "traffic back to the control", self._figures(row), actor="api"))
        self._refresh_quietly()
        return self.view(rollout_id)

    def _figures(self, row: RolloutRow) -> dict[str, Any]:
        counters = self.store.counters(live.arm_subject(row.id, s, arm) for s in range(row.step + 1)
                                       for arm in live.ARMS)
        return {"arms": self._arms(row, counters)}

    def list(self) -> list[dict[str, Any]]:
        return [self._shown(row, None) for row in self.store.list()]

    def view(self, rollout_id: str) -> dict[str, Any]:
        row = self.store.get(rollout_id)
        return self._shown(row, self.store.decisions(rollout_id))

    def _shown(self, row: RolloutRow, decisions: builtins.list | None) -> dict[str, Any]:
        config = config_from_json(row.config)
        shown: dict[str, Any] = {
            "id": row.id, "alias": row.alias, "control": row.control, "candidate": row.candidate,
            "status": row.status, "step": row.step, "percent": row.percent, "shadow": row.shadow,
            "steps": list(config.steps), "started_at": row.started_at, "step_started_at": row.step_started_at,
            "ended_at": row.ended_at, "reason": row.reason, "cause": row.cause, "config": row.config}
        if decisions is None:
            return shown
        subjects = [live.arm_subject(row.id, s, arm) for s in range(row.step + 1) for arm in live.ARMS]
        counters = self.store.counters(subjects)
        shown["arms"] = self._arms(row, counters)
        history = history_of(row, counters)
        test = compare([(s.control.impressions, s.control.accepted, s.candidate.impressions, s.candidate.accepted)
                        for s in history], config.alpha, config.tau)
        shown["comparison"] = {
            "metric": "hit_at_3" if row.shadow else config.metric, "difference": round(test.difference, 6),
            "ci": [round(test.interval.low, 6), round(test.interval.high, 6)], "p_worse": round(test.p_worse, 6),
            "worse": test.worse}
        if row.status == "running" and row.step < config.running_steps:
            now = self.store.now()
            look = decide(config, history, step_seconds(row, now))
            shown["now"] = {"action": str(look.action), "reason": look.reason, "figures": look.figures}
        shown["decisions"] = [{"at": d.at, "action": d.action, "step": d.step, "percent": d.percent,
                               "reason": d.reason, "actor": d.actor, "figures": d.figures} for d in decisions]
        return shown

    def _arms(self, row: RolloutRow, counters: dict[str, dict[str, int]]) -> dict[str, Any]:
        config = config_from_json(row.config)
        arms: dict[str, Any] = {}
        for arm in ("control", "shadow" if row.shadow else "candidate"):
            steps = [counters.get(live.arm_subject(row.id, s, arm), {}) for s in range(row.step + 1)]
            total = live.add(*steps)
            shown = live.summary(total)
            n, x = (shown["typed"], total.get("hit3", 0)) if row.shadow else (shown["impressions_with_feedback"],
                                                                              shown["accepted"])
            ci = proportion_interval(x, n, config.alpha, config.tau)
            shown["model"] = row.control if arm == "control" else row.candidate
            shown["metric_ci"] = [round(ci.low, 6), round(ci.high, 6)]
            shown["this_step"] = live.summary(steps[-1])
            arms[arm] = shown
        return arms

    # -- the decider and the flush (background) ----------------------------------------------------------
    def look(self) -> builtins.list[tuple[str, Outcome]]:
        """One look at every running rollout; what was decided here."""
        rows, now = self.store.running()
        applied = []
        for row in rows:
            subjects = [live.arm_subject(row.id, s, arm) for s in range(row.step + 1) for arm in live.ARMS]
            counters = self.store.counters(subjects)
            self._gauges(row, counters)
            if judge(row, counters, now) is None:
                continue
            outcome = self.store.decide(row.id, row.step, judge)
            if outcome is not None:
                log.info("rollout %s: %s (%s)", row.id, outcome.action, outcome.reason)
                applied.append((row.id, outcome))
        if applied:
            self._refresh_quietly()
        return applied

    def _gauges(self, row: RolloutRow, counters: dict[str, dict[str, int]]) -> None:
        for arm in ("control", "shadow" if row.shadow else "candidate"):
            total = live.add(*(counters.get(live.arm_subject(row.id, s, arm), {}) for s in range(row.step + 1)))
            shown = live.summary(total)
            self.metrics.rollout_acceptance.labels(arm).set(shown["acceptance_rate"] or 0.0)
        self.metrics.rollout_percent.set(row.percent)

    def flush(self) -> None:
        """Blocking: add what this replica counted to the database; on failure keep it for the next try."""
        taken = self.live.take()
        try:
            self.store.add(taken)
        except BaseException:
            self.live.restore(taken)
            raise

    async def flush_async(self) -> None:
        taken = self.live.take()
        try:
            await self.db.run(self.store.add, taken)
        except BaseException:
            self.live.restore(taken)
            raise

    async def run(self) -> None:
        """The flush and the decider, until cancelled; the shadow's worker beside them."""
        self._shadow = asyncio.Queue(SHADOW_QUEUE)
        worker = asyncio.get_running_loop().create_task(self._shadow_worker())
        next_look = time.monotonic()
        try:
            while True:
                await asyncio.sleep(min(self.flush_s, self.decide_s))
                try:
                    await self.flush_async()
                except Exception as exc:
                    log.warning("flushing the live counters failed (%s); kept for the next try", type(exc).__name__)
                if time.monotonic() >= next_look:
                    next_look = time.monotonic() + self.decide_s
                    try:
                        await self.db.run(self.look)
                    except Exception as exc:
                        log.warning("the rollout decider's look failed (%s: %s)", type(exc).__name__, exc)
        finally:
            worker.cancel()
            with contextlib.suppress(Exception):
                await self.flush_async()  # the last counts, on the way out

    def close(self) -> None:
        self.db.close()

