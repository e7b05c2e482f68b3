"""The typed messages between a job runner and its training process, imported by both sides.

The runner writes a RunSpec (JSON file) and starts `python -m app.jobs.process SPEC`; the process answers on
stdout with one JSON object per line: Progress messages, then one Result. Anything else on stdout is not a
message (decode raises ProtocolError), so a stray print cannot be mistaken for progress.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields


class ProtocolError(ValueError):
    """A line that is not a message of this protocol."""


@dataclass(frozen=True)
class RunSpec:
    body: dict  # the validated POST /jobs body
    out: str  # where the process writes the checkpoint (and its manifest)
    device: str  # the device the runner was granted, e.g. "cpu" or "cuda:0"
    threads: int = 1
    name: str | None = None
    compare_with: str | None = None  # a checkpoint file of the model active when the job started
    compared_id: str | None = None
    parent_pid: int | None = None  # the process dies with its runner

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Gate:
    """The if_better comparison: both models scored on this job's held-out set."""

    new: float
    active: float | None = None
    comparable: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    loss: float
    accuracy: float | None
    eta_seconds: float
    elapsed_seconds: float


@dataclass(frozen=True)
class Result:
    status: str  # succeeded | cancelled
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    gate: Gate | None = None


Message = Progress | Result
KINDS = {"progress": Progress, "result": Result}


def encode(message: Message) -> str:
    kind = "progress" if isinstance(message, Progress) else "result"
    return json.dumps({"type": kind, **asdict(message)}) + "\n"


def decode(line: bytes | str) -> Message:
    try:
        data = json.loads(line)
        kind = KINDS[data.pop("type")]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"not a message: {line[:200]!r}") from exc
    names = {f.name for f in fields(kind)}
    if set(data) - names:
        raise ProtocolError(f"unexpected fields in a {kind.__name__}: {sorted(set(data) - names)}")
    if kind is Result and data.get("gate") is not None:
        data["gate"] = Gate(**data["gate"])
    try:
        return kind(**data)
    except TypeError as exc:
        raise ProtocolError(f"a malformed {kind.__name__}: {exc}") from exc
