"""The typed messages between a job runner and its training process, imported by both sides.

The runner writes a RunSpec (JSON file) and starts `python -m app.jobs.process SPEC`; the process answers on
stdout with one JSON object per line: Progress messages (model.training's own type), then one Result. Fields go
by name both ways. Anything else on stdout is not a message (decode raises ProtocolError), so a stray print cannot
be mistaken for progress.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from model.jobspec import JobSpec, parse_job
from model.training import Progress


class ProtocolError(ValueError):
    """A line that is not a message of this protocol."""


@dataclass(frozen=True)
class RunSpec:
    spec: JobSpec  # the job, validated again when the process reads it: its own boundary
    out: str  # where the process writes the checkpoint (and its manifest)
    device: str  # the device the runner was granted, e.g. "cpu" or "cuda:0"
    threads: int = 1
    compare_with: str | None = None  # a checkpoint file of the model active when the job started
    compared_id: str | None = None
    parent_pid: int | None = None  # the process dies with its runner
    # A learning cycle's job: the base corpus to keep with the model, the usage holdout and the base sequences the
    # offline gate scores it on against compare_with (the alias's model), and the gate's rules (app/learning)
    learning: dict[str, Any] | None = None

    def dumps(self) -> str:
        rest = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "spec"}
        return json.dumps({"spec": self.spec.to_dict(), **rest})

    @classmethod
    def loads(cls, text: str) -> RunSpec:
        data = json.loads(text)
        return cls(spec=parse_job(data.pop("spec")), **data)


@dataclass(frozen=True)
class Gate:
    """The if_better comparison: both models scored on this job's held-out set."""

    new: float
    active: float | None = None
    comparable: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class RunMetrics:
    """What the runner records of a finished run; the full metrics travel in the checkpoint."""

    steps: int
    loss: float
    accuracy: float

    @classmethod
    def of(cls, metrics: dict[str, Any]) -> RunMetrics:
        return cls(steps=metrics["steps"], loss=metrics["loss"], accuracy=metrics["accuracy"])


@dataclass(frozen=True)
class Result:
    status: Literal["succeeded", "cancelled"]
    metrics: RunMetrics
    history: list[dict[str, Any]] = field(default_factory=list)  # model.training.record_point's points
    gate: Gate | None = None


Message = Progress | Result
KINDS: dict[str, type[Progress] | type[Result]] = {"progress": Progress, "result": Result}
NESTED = {"metrics": RunMetrics, "gate": Gate}  # a Result's fields that are messages' parts themselves


def encode(message: Message) -> str:
    kind = "progress" if isinstance(message, Progress) else "result"
    return json.dumps({"type": kind, **asdict(message)}) + "\n"


def decode(line: bytes | str) -> Message:
    try:
        data = json.loads(line)
        kind = KINDS[data.pop("type")]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"not a message: {line[:200]!r}") from exc
    try:
        return _build(kind, data)
    except TypeError as exc:
        raise ProtocolError(f"a malformed {kind.__name__}: {exc}") from exc


def _build(kind: type[Any], data: dict[str, Any]) -> Any:
    """kind(**data) by field name, refusing fields it does not have, its nested parts built the same way."""
    names = {f.name for f in fields(kind)}
    if set(data) - names:
        raise ProtocolError(f"unexpected fields in a {kind.__name__}: {sorted(set(data) - names)}")
    if kind is Result:
        data = {k: _build(NESTED[k], v) if k in NESTED and isinstance(v, dict) else v for k, v in data.items()}
    return kind(**data)
