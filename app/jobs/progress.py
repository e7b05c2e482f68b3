"""A job's progress as stored and shown: the trainer's Progress with the fraction done, the time spent left out."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from model.training import Progress

from .protocol import RunMetrics


@dataclass(frozen=True)
class JobProgress:
    step: int
    total_steps: int
    fraction: float
    loss: float | None
    accuracy: float | None
    eta_seconds: float | None

    @classmethod
    def queued(cls, total_steps: int) -> JobProgress:
        return cls(step=0, total_steps=total_steps, fraction=0.0, loss=None, accuracy=None, eta_seconds=None)

    @classmethod
    def of(cls, p: Progress) -> JobProgress:
        return cls(step=p.step, total_steps=p.total_steps, fraction=p.step / p.total_steps, loss=p.loss,
                   accuracy=p.accuracy, eta_seconds=p.eta_seconds)

    def finished(self, metrics: RunMetrics) -> JobProgress:
        """Where the run ended: a target reached early ends it before total_steps."""
        return replace(self, step=metrics.steps, fraction=metrics.steps / self.total_steps, loss=metrics.loss,
                       accuracy=metrics.accuracy, eta_seconds=0.0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
