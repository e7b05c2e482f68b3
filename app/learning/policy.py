"""A learning policy: when an alias's usage becomes a retrain, what it trains on, how the candidate is judged offline
and how it is rolled out. Every rule about its values lives here, once: the HTTP body only types the fields, and
`Policy` refuses a bad value with InvalidInput naming it (`rollout.steps`, `gate.base_margin`, `training.steps`).

The defaults (DEFAULTS, and the README's "Learning from usage") were chosen with bench/learning.py where a
measurement could choose them; the others say why they are what they are.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from model.jobspec import JobError, build_spec

from ..errors import InvalidInput
from ..rollouts.service import config_json, config_of

MAX_EVENTS = 100_000  # the newest events a cycle reads; a job trains on at most 100,000 sequences anyway
DAY = 86_400.0


@dataclass(frozen=True)
class GateRules:
    """The offline gate: usage hit@3 must improve with `confidence`, and base hit@3 on the prefixes usage did not
    touch may fall by at most `base_margin` (the lower end of its interval), both by a paired bootstrap."""

    confidence: float = 0.95
    base_margin: float = 0.02
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        _within("gate.confidence", self.confidence, 0.5, 0.999)
        _within("gate.base_margin", self.base_margin, 0.0, 1.0)
        _within("gate.resamples", self.resamples, 100, 20_000)
        _within("gate.seed", self.seed, 0, 2**31 - 1)


@dataclass(frozen=True)
class Policy:
    alias: str = "production"
    enabled: bool = False  # off until an operator turns it on
    min_feedback: int = 1000  # new events that start a cycle
    max_interval_s: float = DAY  # or this long since the last cycle (or since enabled) with any new event
    holdout_fraction: float = 0.1  # the newest sessions, by their first event, never trained on
    session_cap: float = 0.01  # the most one session may make of the usage examples
    usage_weight: float = 1.0  # one usage example weighs this many base-corpus sequences ...
    max_usage_share: float = 0.9  # ... unless usage would make more than this of the training set
    max_events: int = 50_000  # the newest events of the alias's usage a cycle reads
    gate: GateRules = field(default_factory=GateRules)
    # A candidate's cache starts cold: its p99 is judged over 1,000 requests a step (not 200), so that its first few
    # misses are not its p99 against a control answered from the cache (bench/learning.py rolled back on that).
    rollout: dict[str, Any] = field(default_factory=lambda: {"steps": [10, 50, 100], "min_requests": 1000,
                                                             "min_feedback": 300,
                                                             "guardrails": {"min_latency_requests": 1000}})
    training: dict[str, Any] = field(default_factory=dict)  # job training fields over the default recipe

    def __post_init__(self) -> None:
        _within("min_feedback", self.min_feedback, 1, 10_000_000)
        _within("max_interval_s", self.max_interval_s, 1.0, 365 * DAY)
        _within("holdout_fraction", self.holdout_fraction, 0.01, 0.5)
        if not 0 < self.session_cap <= 1:
            raise InvalidInput("session_cap", f"must be within (0, 1], not {self.session_cap}")
        if not 0 < self.usage_weight <= 100:
            raise InvalidInput("usage_weight", f"must be within (0, 100], not {self.usage_weight}")
        if not 0 < self.max_usage_share < 1:
            raise InvalidInput("max_usage_share", f"must be within (0, 1), not {self.max_usage_share}")
        _within("max_events", self.max_events, 1, MAX_EVENTS)
        self.rollout_config()  # each raises InvalidInput naming its field
        self.check_training()

    def rollout_config(self) -> tuple[dict[str, Any], float]:
        """The rollout's stored config and its first step's percent."""
        try:
            config, sample = config_of(dict(self.rollout))
        except InvalidInput as exc:
            raise InvalidInput(f"rollout.{exc.field}", exc.reason) from None
        except TypeError as exc:
            raise InvalidInput("rollout", str(exc)) from None
        return config_json(config, sample), config.steps[0]

    def check_training(self) -> None:
        try:
            build_spec(model={}, training=dict(self.training), sequences=None, activate="never")
        except JobError as exc:
            raise InvalidInput(exc.field, exc.reason) from None

    def config(self) -> dict[str, Any]:
        """What the store keeps (everything but the alias and the switch)."""
        out = asdict(self)
        del out["alias"], out["enabled"]
        return out

    def shown(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, alias: str, enabled: bool, stored: dict[str, Any]) -> Policy:
        """A stored policy; keys this version does not know are dropped, missing ones take the defaults."""
        known = {k: v for k, v in stored.items() if k in FIELDS and k not in ("alias", "enabled", "gate")}
        gate = GateRules(**{k: v for k, v in (stored.get("gate") or {}).items() if k in GATE_FIELDS})
        return cls(alias=alias, enabled=enabled, gate=gate, **known)

    def updated(self, given: dict[str, Any]) -> Policy:
        """This policy with the given fields changed (a PUT): the fields left out keep their values."""
        given = dict(given)
        gate = given.pop("gate", None)
        if gate is not None:
            given["gate"] = replace(self.gate, **gate)
        return replace(self, **given)


def _within(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InvalidInput(name, f"must be from {low:g} to {high:g}, not {value}")


DEFAULTS = Policy()
FIELDS = frozenset(Policy.__dataclass_fields__)
GATE_FIELDS = frozenset(GateRules.__dataclass_fields__)
