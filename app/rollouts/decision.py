"""What a running rollout should do next, from its counters: hold, step up, promote or roll back.

`decide` is a pure function of the configuration, each step's counters and the time spent in the current step, so
the one replica that holds the rollout's lock can call it on whatever it has just read from the database, as often
as it likes: the metric test (`sequential.compare`) stays valid however often it is looked at.

Order, each look:
1. Guardrails, on the current step's counters (they judge the candidate at the load it now has): a candidate
   error rate above `error_rate`, or a candidate p99 above `p99_ratio` x the control's, rolls back at once.
2. The metric: a candidate worse than the control at 1 - alpha confidence, over all steps so far, rolls back.
3. Otherwise, once the step has `min_requests` candidate requests, `min_feedback` candidate impressions with
   feedback and `min_seconds`, and the guardrails could be checked: the next step, or at the last running step,
   promotion. A final step of 100% is the promotion itself: at 100% there is no control left to compare with.
   Promotion also needs the always-valid interval of the difference to clear -`promote_margin`: not being shown
   worse is enough to take more traffic, but the move of the alias needs evidence that any loss is small. A
   candidate that cannot show it holds and keeps collecting until it does, or until the test shows it worse.
4. Otherwise hold, saying what is still missing.

The error guardrail needs evidence, not an unlucky first request: it trips when the candidate has at least
`min_errors` 5xx and the lower end of a one-sided Wilson bound at z = `error_z` (99%) on its error rate is above
the threshold. A healthy candidate at a fifth of the threshold almost never gets there (5 errors in the first
hundred requests), while a broken one still trips in a handful of requests (5 of 5: bound 0.48) and one failing
5% of its requests within a few hundred. When the control is above the threshold too the failure is not the
candidate's (a database away fails both arms): the rollout holds, and rolls back only if the candidate's bound
clears the control's upper bound. The p99 guardrail waits for `min_latency_requests` in each arm, so that a p99
is not just the slowest few requests."""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..errors import InvalidInput
from .sequential import Comparison, compare, proportion_interval

METRICS = ("acceptance",)


@dataclass(frozen=True)
class ArmStats:
    """One arm's counters over one step, summed across replicas."""
    requests: int = 0
    errors: int = 0  # answers with a 5xx status
    impressions: int = 0  # impressions that got feedback
    accepted: int = 0  # of those, the ones whose suggestion was taken
    p99_ms: float | None = None  # the step's latency p99; None when not measured

    def __post_init__(self) -> None:
        for name in ("requests", "errors", "impressions", "accepted"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.errors > self.requests:
            raise ValueError(f"errors ({self.errors}) exceed requests ({self.requests})")
        if self.accepted > self.impressions:
            raise ValueError(f"accepted ({self.accepted}) exceed impressions ({self.impressions})")

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.impressions if self.impressions else None

    def since(self, start: ArmStats) -> ArmStats:
        """The counters since `start` (cumulative counters read when the step began); p99 is this one's."""
        return ArmStats(self.requests - start.requests, self.errors - start.errors,
                        self.impressions - start.impressions, self.accepted - start.accepted, self.p99_ms)


@dataclass(frozen=True)
class StepStats:
    control: ArmStats
    candidate: ArmStats


@dataclass(frozen=True)
class Guardrails:
    """Limits on the candidate that roll it back at once; None switches one off."""
    error_rate: float | None = 0.01
    p99_ratio: float | None = 1.5
    min_errors: int = 5
    error_z: float = 2.326  # one-sided 99%
    min_latency_requests: int = 200

    def __post_init__(self) -> None:
        if self.error_rate is not None and not 0 < self.error_rate < 1:
            raise InvalidInput("guardrails.error_rate", f"must be within (0, 1), not {self.error_rate}")
        if self.p99_ratio is not None and not self.p99_ratio >= 1:
            raise InvalidInput("guardrails.p99_ratio", f"must be at least 1, not {self.p99_ratio}")
        if self.min_errors < 1:
            raise InvalidInput("guardrails.min_errors", f"must be at least 1, not {self.min_errors}")
        if self.error_z <= 0 or self.min_latency_requests < 1:
            raise InvalidInput("guardrails", "error_z must be > 0 and min_latency_requests >= 1")


@dataclass(frozen=True)
class RolloutConfig:
    """A rollout's rules. The defaults pass bench/rollout_stats.py's three targets together (see the README)."""
    steps: tuple[float, ...] = (10, 50, 100)  # the candidate's percent at each step
    min_requests: int = 3000  # candidate requests in a step before it may move on (3,000 at 10%: 30,000 in all)
    min_seconds: float = 0.0  # and time in the step
    min_feedback: int = 1000  # and candidate impressions with feedback
    metric: str = "acceptance"
    guardrails: Guardrails = field(default_factory=Guardrails)
    alpha: float = 0.05  # the metric test's level: "worse at 95% confidence"
    tau: float = 0.05  # the mixture's scale: the size of difference the test is quickest on (5 points)
    promote_margin: float | None = 0.03  # promotion needs the difference's interval above -this; None: not needed

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps or any(not 0 < s <= 100 for s in steps) or any(a >= b for a, b in itertools.pairwise(steps)):
            raise InvalidInput("steps", f"must rise strictly within (0, 100], not {list(steps)}")
        if steps[0] == 100:
            raise InvalidInput("steps", "need a step below 100: at 100% there is nothing to compare with")
        if any(round(s * 100) != s * 100 for s in steps):
            raise InvalidInput("steps", "percentages have at most two decimals")
        if self.min_requests < 0 or self.min_feedback < 0 or self.min_seconds < 0:
            raise InvalidInput("min_requests", "min_requests, min_feedback and min_seconds must be >= 0")
        if self.metric not in METRICS:
            raise InvalidInput("metric", f"must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if not 0 < self.alpha < 0.5:
            raise InvalidInput("alpha", f"must be within (0, 0.5), not {self.alpha}")
        if not 0 < self.tau <= 1:
            raise InvalidInput("tau", f"must be within (0, 1], not {self.tau}")
        if self.promote_margin is not None and not 0 <= self.promote_margin <= 1:
            raise InvalidInput("promote_margin", f"must be within [0, 1], not {self.promote_margin}")

    @property
    def running_steps(self) -> int:
        """How many steps run with a control beside them (a final 100 is the promotion, not a step)."""
        return len(self.steps) - (self.steps[-1] == 100)


class Action(StrEnum):
    HOLD = "hold"
    STEP_UP = "step_up"
    PROMOTE = "promote"
    ROLL_BACK = "roll_back"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    step: int  # the step index after the decision (for step_up, the new one)
    percent: float  # the candidate's share after it (100 once promoted, 0 once rolled back)
    figures: dict[str, Any]  # JSON-ready: each arm, the test, the guardrails, what the step still needs
    cause: str | None = None  # a roll back's, from a closed set: "error_rate", "p99_ratio", "acceptance"


def decide(config: RolloutConfig, history: Sequence[StepStats], step_seconds: float) -> Decision:
    """The next action of a rollout at step `len(history) - 1`, `history` holding each step's counters so far."""
    step = len(history) - 1
    if not 0 <= step < config.running_steps:
        raise ValueError(f"history has {len(history)} steps; the rollout runs {config.running_steps}")
    now = history[-1]
    percent = config.steps[step]
    test = compare([(s.control.impressions, s.control.accepted, s.candidate.impressions, s.candidate.accepted)
                    for s in history], config.alpha, config.tau)
    figures: dict[str, Any] = {
        "step": step, "percent": percent, "step_seconds": round(step_seconds, 3),
        "control": _arm_figures(now.control, history, "control", config),
        "candidate": _arm_figures(now.candidate, history, "candidate", config),
        "test": _test_figures(test, config)}
    g = config.guardrails
    broken, unchecked, guard_figures = _guardrails(now, g)
    figures["guardrails"] = guard_figures

    def result(action: Action, reason: str, new_step: int, new_percent: float, cause: str | None = None) -> Decision:
        return Decision(action, reason, new_step, new_percent, figures, cause)

    if broken and broken[0] != "hold":
        return result(Action.ROLL_BACK, broken[1], step, 0.0, broken[0])
    if test.worse:
        c, t = test.candidate_impressions, test.control_impressions
        return result(Action.ROLL_BACK,
                      f"acceptance: candidate {_pct(_rate(history, 'candidate'))} over {c} impressions is worse than "
                      f"control {_pct(_rate(history, 'control'))} over {t} (difference {_pts(test.difference)}, "
                      f"always-valid p = {test.p_worse:.4f} <= {config.alpha}; {_ci(test, config)})", step, 0.0,
                      "acceptance")
    missing = []
    if now.candidate.requests < config.min_requests:
        missing.append(f"candidate requests {now.candidate.requests}/{config.min_requests}")
    if now.candidate.impressions < config.min_feedback:
        missing.append(f"candidate impressions with feedback {now.candidate.impressions}/{config.min_feedback}")
    if step_seconds < config.min_seconds:
        missing.append(f"seconds {step_seconds:.0f}/{config.min_seconds:.0f}")
    if broken:  # the hold case: both arms above the error threshold
        missing.append(broken[1])
    missing += unchecked
    last = step + 1 >= config.running_steps
    if last and config.promote_margin is not None and test.interval.low < -config.promote_margin:
        missing.append(f"promotion needs the difference's interval above {_pts(-config.promote_margin)} "
                       f"({_ci(test, config)})")
    figures["missing"] = missing
    if missing:
        return result(Action.HOLD, "waiting: " + "; ".join(missing), step, percent)
    shown = (f"candidate {_pct(_rate(history, 'candidate'))} vs control {_pct(_rate(history, 'control'))} "
             f"({_ci(test, config)}), guardrails hold")
    if last:
        return result(Action.PROMOTE, f"step {step} ({percent:g}%) complete and not worse: {shown}", step, 100.0)
    return result(Action.STEP_UP, f"step {step} ({percent:g}%) complete and not worse: {shown}",
                  step + 1, config.steps[step + 1])


def _guardrails(now: StepStats, g: Guardrails) -> tuple[tuple[str, str] | None, list[str], dict[str, Any]]:
    """(the broken guardrail as (kind, reason), or ("hold", reason) when both arms fail alike; what could not be
    checked yet; the figures)."""
    cand, ctl = now.candidate, now.control
    figures: dict[str, Any] = {}
    unchecked: list[str] = []
    broken: tuple[str, str] | None = None
    if g.error_rate is not None:
        c_low, _ = _wilson(cand.errors, cand.requests, g.error_z)
        _, t_high = _wilson(ctl.errors, ctl.requests, g.error_z)
        figures["error_rate"] = {"threshold": g.error_rate, "candidate": _r(cand.error_rate),
                                 "candidate_lower_bound": _r(c_low), "control": _r(ctl.error_rate),
                                 "candidate_errors": cand.errors, "candidate_requests": cand.requests,
                                 "control_errors": ctl.errors, "control_requests": ctl.requests,
                                 "min_errors": g.min_errors}
        if cand.errors >= g.min_errors and c_low > g.error_rate:
            said = (f"candidate error rate {_pct(cand.error_rate)} ({cand.errors} 5xx in {cand.requests} requests, "
                    f"Wilson lower bound {_pct(c_low)} at z = {g.error_z:g}) above the guardrail {_pct(g.error_rate)}")
            control_fails = ctl.error_rate is not None and ctl.error_rate > g.error_rate
            if not control_fails:
                broken = ("error_rate", f"{said}; control {_pct(ctl.error_rate)} ({ctl.errors} in {ctl.requests})")
            elif c_low > t_high:
                broken = ("error_rate", f"{said}, and above the control's {_pct(ctl.error_rate)} "
                                        f"({ctl.errors} in {ctl.requests}, upper bound {_pct(t_high)})")
            else:
                broken = ("hold", f"both arms above the error guardrail (candidate {_pct(cand.error_rate)}, control "
                                  f"{_pct(ctl.error_rate)}): not the candidate's failure")
    if g.p99_ratio is not None and broken is None:
        c99, t99 = cand.p99_ms, ctl.p99_ms
        figures["p99"] = {"ratio_limit": g.p99_ratio, "candidate_ms": c99, "control_ms": t99,
                          "ratio": _r(c99 / t99) if c99 is not None and t99 else None,
                          "min_requests": g.min_latency_requests}
        if c99 is None or t99 is None:
            unchecked.append("p99 not measured in both arms")
        elif min(cand.requests, ctl.requests) < g.min_latency_requests:
            unchecked.append(f"p99 needs {g.min_latency_requests} requests per arm "
                             f"(candidate {cand.requests}, control {ctl.requests})")
        elif c99 > g.p99_ratio * t99:
            broken = ("p99_ratio", f"candidate p99 {c99:g} ms > {g.p99_ratio:g} x control p99 {t99:g} ms "
                                   f"(= {g.p99_ratio * t99:g} ms; ratio {c99 / t99 if t99 else math.inf:.2f}) "
                                   f"over {cand.requests} and {ctl.requests} requests")
    return broken, unchecked, figures


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - margin), min(1.0, centre + margin)


def _rate(history: Sequence[StepStats], arm: str) -> float | None:
    n = sum(getattr(s, arm).impressions for s in history)
    return sum(getattr(s, arm).accepted for s in history) / n if n else None


def _arm_figures(now: ArmStats, history: Sequence[StepStats], arm: str, config: RolloutConfig) -> dict[str, Any]:
    impressions = sum(getattr(s, arm).impressions for s in history)
    accepted = sum(getattr(s, arm).accepted for s in history)
    ci = proportion_interval(accepted, impressions, config.alpha, config.tau)
    return {"step": {"requests": now.requests, "errors": now.errors, "impressions": now.impressions,
                     "accepted": now.accepted, "p99_ms": now.p99_ms},
            "impressions": impressions, "accepted": accepted,
            "acceptance": _r(accepted / impressions if impressions else None), "acceptance_ci": [_r(ci.low), _r(ci.high)]}


def _test_figures(test: Comparison, config: RolloutConfig) -> dict[str, Any]:
    return {"difference": _r(test.difference), "ci": [_r(test.interval.low), _r(test.interval.high)],
            "p_worse": _r(test.p_worse), "p_differ": _r(test.p_differ), "alpha": config.alpha, "tau": config.tau,
            "worse": test.worse, "control_impressions": test.control_impressions,
            "candidate_impressions": test.candidate_impressions}


def _r(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else float(f"{x:.6g}")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _pts(x: float) -> str:
    return f"{100 * x:+.2f} points"


def _ci(test: Comparison, config: RolloutConfig) -> str:
    return (f"{100 * (1 - config.alpha):g}% always-valid interval of the difference "
            f"[{_pts(test.interval.low)}, {_pts(test.interval.high)}]")
