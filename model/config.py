"""Hyperparameters as data: a checkpoint stores these beside its weights, so a file describes itself."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape. Defaults are the seed's."""

    vocab_size: int = 10  # digits 0-9
    seq_length: int = 5
    embedding_dim: int = 16
    hidden_dim: int = 32
    attention: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_length", "embedding_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.vocab_size < 2:
            raise ValueError("vocab_size must be at least 2")
        if self.seq_length < 2:
            raise ValueError("seq_length must be at least 2 (a start token and one to predict)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are the seed's (its "epochs" are our steps)."""

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 0.005
    teacher_forcing_ratio: float = 0.5
    seed: int = 0
    target_accuracy: float | None = None  # stop early once the evaluation metric reaches this
    eval_every: int = 100  # steps between evaluations (a 1,000-item screen; the full set when it meets the target)
    # Prefix lengths the encoder sees; None means 1..L for a corpus and L alone (the copy task) for random data.
    prefix_lengths: tuple[int, ...] | None = None
    eval_size: int = 10_000  # held-out sequences for the random generator's final exact-match

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.teacher_forcing_ratio <= 1.0:
            raise ValueError(f"teacher_forcing_ratio must be in [0, 1], got {self.teacher_forcing_ratio}")
        if self.target_accuracy is not None and not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every}")
        if self.prefix_lengths is not None:
            object.__setattr__(self, "prefix_lengths", tuple(sorted(set(int(p) for p in self.prefix_lengths))))
            if not self.prefix_lengths or min(self.prefix_lengths) < 1:
                raise ValueError("prefix_lengths must be a non-empty list of lengths >= 1")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["prefix_lengths"] is not None:
            data["prefix_lengths"] = list(data["prefix_lengths"])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return cls(**_known(cls, data))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return dict(data)

