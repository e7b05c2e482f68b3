"""Bodies of the rollout routes and of the live metrics (GET /models/{id} `live`, each arm of a rollout)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from ..rollouts.decision import RolloutConfig

_D = RolloutConfig()


class GuardrailsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error_rate: float | None = Field(None, description=f"the candidate's 5xx rate that rolls it back (default "
                                     f"{_D.guardrails.error_rate}); null switches it off")
    p99_ratio: float | None = Field(None, description=f"candidate p99 over control p99 that rolls it back (default "
                                    f"{_D.guardrails.p99_ratio}); null switches it off")
    min_errors: int | None = Field(None, strict=True, description=f"5xx before the error guardrail may trip (default "
                            f"{_D.guardrails.min_errors})")
    min_latency_requests: int | None = Field(None, strict=True, description="requests per arm in a step before the p99 "
                                      f"guardrail is checked (default {_D.guardrails.min_latency_requests})")


class RolloutStart(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"alias": "production", "candidate": "m-20260101-120000-a1b2c3", "steps": [10, 50, 100],
         "min_requests": 2000, "min_seconds": 0, "metric": "acceptance",
         "guardrails": {"error_rate": 0.01, "p99_ratio": 1.5}}]})

    alias: str = Field("production", max_length=32, description="the alias whose traffic is split")
    candidate: str = Field(min_length=1, max_length=64, description="the model id tried")
    steps: list[float] | None = Field(None, min_length=1, max_length=20, description=f"the candidate's percent at each "
                               f"step, rising; a last 100 is the promotion (default {list(_D.steps)})")
    min_requests: int | None = Field(None, strict=True, description=f"candidate requests a step needs (default "
                              f"{_D.min_requests})")
    min_feedback: int | None = Field(None, strict=True, description=f"candidate impressions with feedback a step needs "
                              f"(default {_D.min_feedback})")
    min_seconds: float | None = Field(None, description=f"seconds a step lasts at least (default {_D.min_seconds:g})")
    metric: str | None = Field(None, description="what the test compares: acceptance")
    guardrails: GuardrailsIn | None = None
    alpha: float | None = Field(None, description=f"the test's level (default {_D.alpha})")
    tau: float | None = Field(None, description=f"the mixture's scale (default {_D.tau})")
    promote_margin: float | None = Field(None, description=f"promotion needs the difference's interval above "
                                         f"-this (default {_D.promote_margin}); null: not needed")
    shadow: StrictBool = Field(False, description="no traffic to the candidate: it decodes a sample of the alias's "
                               "/topk requests in the background and is scored on hit@3 against what users typed")
    sample: float | None = Field(None, description="a shadow's share of requests decoded again (default 0.1)")


class LiveStats(BaseModel):
    requests: int
    errors: int = Field(description="answers with a 5xx status")
    p50_ms: float | None
    p99_ms: float | None
    impressions_with_feedback: int
    accepted: int
    acceptance_rate: float | None
    typed: int = Field(description="feedback events that said what the user typed")
    hit_at_1: float | None = Field(description="of those, the share whose typed sequence was the first suggestion")
    hit_at_3: float | None = Field(description="... among the first three")


class ArmView(LiveStats):
    model: str
    metric_ci: list[float] = Field(description="the always-valid 95% interval of the arm's metric (acceptance; a "
                                   "shadow's: hit@3)")
    this_step: LiveStats


class RolloutView(BaseModel):
    id: str
    alias: str
    control: str = Field(description="what the alias named when the rollout started")
    candidate: str
    status: str = Field(description="running, promoted, rolled_back or aborted")
    step: int
    percent: float = Field(description="the candidate's share of the alias's traffic now")
    shadow: bool
    steps: list[float]
    started_at: str
    step_started_at: str
    ended_at: str | None
    reason: str | None = Field(description="why it ended")
    cause: str | None = Field(description="a roll back's: error_rate, p99_ratio or acceptance")
    config: dict[str, Any]
    arms: dict[str, ArmView] | None = Field(None, description="control and candidate (or shadow), across replicas")
    comparison: dict[str, Any] | None = Field(None, description="the candidate minus the control: difference, "
                                              "always-valid 95% interval, p-value of 'worse'")
    now: dict[str, Any] | None = Field(None, description="what the decider would do now, and its figures")
    decisions: list[dict[str, Any]] | None = Field(None, description="every decision, oldest first, with figures")


class RolloutRef(BaseModel):
    id: str
    step: int
    percent: float
    candidate: str
    shadow: bool
