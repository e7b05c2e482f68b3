"""Bodies of the learning routes: the policy (PUT /learning, fields left out keep their values), a cycle as every
answer shows it. Types here; every rule on the values lives in app/learning/policy.py."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ..learning.policy import DEFAULTS
from .job_schemas import TrainingSpec
from .rollout_schemas import GuardrailsIn

_D = DEFAULTS


class GateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    confidence: float | None = Field(None, description=f"the paired bootstrap's two-sided level (default "
                                     f"{_D.gate.confidence})")
    base_margin: float | None = Field(None, description="how far base hit@3 on the prefixes usage did not touch may "
                                      f"fall (the interval's lower end; default {_D.gate.base_margin})")
    resamples: StrictInt | None = Field(None, description=f"bootstrap draws (default {_D.gate.resamples})")
    seed: StrictInt | None = Field(None, description="the bootstrap's seed (default 0)")


class RolloutRules(BaseModel):
    """A cycle's rollout: the fields of POST /rollouts but the alias, the candidate and shadow."""

    model_config = ConfigDict(extra="forbid")

    steps: list[float] | None = Field(None, min_length=1, max_length=20)
    min_requests: StrictInt | None = None
    min_feedback: StrictInt | None = None
    min_seconds: float | None = None
    metric: str | None = None
    guardrails: GuardrailsIn | None = None
    alpha: float | None = None
    tau: float | None = None
    promote_margin: float | None = None


class LearningPut(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"alias": "production", "enabled": True, "min_feedback": 1000, "max_interval_s": 86400,
         "holdout_fraction": 0.1, "session_cap": 0.01, "usage_weight": 1.0,
         "rollout": {"steps": [10, 50, 100], "min_requests": 1000, "min_feedback": 300}}]})

    alias: str = Field("production", max_length=32, description="the alias whose usage it learns from")
    enabled: StrictBool | None = Field(None, description="off until turned on")
    min_feedback: StrictInt | None = Field(None, description=f"new feedback events that start a cycle (default "
                                           f"{_D.min_feedback})")
    max_interval_s: float | None = Field(None, description="or this long since the last cycle with any new event "
                                         f"(default {_D.max_interval_s:g})")
    holdout_fraction: float | None = Field(None, description="the newest sessions never trained on, the usage "
                                           f"holdout (default {_D.holdout_fraction})")
    session_cap: float | None = Field(None, description=f"the most one session may make of the usage examples "
                                      f"(default {_D.session_cap})")
    usage_weight: float | None = Field(None, description="a usage example's weight against one base-corpus "
                                       f"sequence (default {_D.usage_weight:g})")
    max_usage_share: float | None = Field(None, description="the most usage may make of the training set, its "
                                          f"weight lowered past it (default {_D.max_usage_share})")
    max_events: StrictInt | None = Field(None, description=f"the newest events a cycle reads (default {_D.max_events})")
    gate: GateIn | None = None
    rollout: RolloutRules | None = Field(None, description=f"the candidate's rollout (default {_D.rollout}); "
                                         "given, it replaces the whole object")
    training: TrainingSpec | None = Field(None, description="job training fields over the default recipe (default: "
                                          "none); given, it replaces the whole object")

    def changes(self) -> dict[str, Any]:
        given = self.model_dump(exclude_unset=True, exclude={"alias"})
        if "gate" in given and given["gate"] is not None:
            given["gate"] = {k: v for k, v in given["gate"].items() if v is not None}
        if self.rollout is not None:
            given["rollout"] = self.rollout.model_dump(exclude_unset=True)
        if self.training is not None:
            given["training"] = self.training.model_dump(exclude_unset=True)
        return {k: v for k, v in given.items() if v is not None}


class PolicyState(BaseModel):
    stored: bool = Field(description="false: never set, these are the defaults")
    cycles: int
    enabled_at: str | None
    updated_at: str | None
    last_cycle_at: str | None
    new_events: int | None = Field(description="events in the alias's usage since the last cycle")
    open_cycle: str | None
    blocked: str | None = Field(description="why the last due cycle could not start, as this replica saw it")


class PolicyView(BaseModel):
    alias: str
    enabled: bool
    min_feedback: int
    max_interval_s: float
    holdout_fraction: float
    session_cap: float
    usage_weight: float
    max_usage_share: float
    max_events: int
    gate: dict[str, Any]
    rollout: dict[str, Any]
    training: dict[str, Any]
    state: PolicyState


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str = Field("production", max_length=32)


class CycleView(BaseModel):
    id: str
    alias: str
    number: int
    trigger: str = Field(description="threshold, interval or manual")
    status: str = Field(description="training, rolling_out or ended")
    outcome: str | None = Field(description="once ended: promoted, rolled_back, aborted, refused, failed, cancelled")
    reason: str | None
    control: str = Field(description="the alias's model when the cycle started: what the candidate is judged against")
    job_id: str | None
    candidate: str | None
    rollout_id: str | None
    feedback: dict[str, int] = Field(description="the feedback events it read as new: seq in (after, through]")
    counts: dict[str, Any] = Field(description="events, sessions, usage examples, capped, holdout, base, training")
    data: dict[str, Any] = Field(description="digests of the training set, the usage, the holdout and the base")
    gate: dict[str, Any] | None = Field(description="the offline gate's figures and verdict")
    created_at: str
    updated_at: str
    ended_at: str | None
    job: dict[str, Any] | None = Field(description="an open cycle's job: status, attempt, progress")


class AcceptancePoint(BaseModel):
    at: str = Field(description="the bucket: the received time cut to the day, hour or minute (UTC)")
    impressions: int = Field(description="impressions that got feedback")
    accepted: int
    acceptance: float | None
    typed: int = Field(description="events that said what the user typed")
    hit3: int
    hit_at_3: float | None = Field(description="of those, the share whose typed sequence was among the first three")


class AcceptanceSeries(BaseModel):
    model: str
    points: list[AcceptancePoint]


class AcceptanceView(BaseModel):
    alias: str
    width: str
    series: list[AcceptanceSeries]
