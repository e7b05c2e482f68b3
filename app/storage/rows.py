"""What the stores return: typed rows instead of database mappings (JSON columns parsed, booleans as bool)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import RowMapping

Source = Literal["shipped", "trained"]


class CheckpointInfo(BaseModel):
    """What a model's row says about its checkpoint (the `info` column), so listing models never loads one.

    Extra keys are kept, so whatever a row holds (another version's, the legacy import's) reads back unchanged."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str | None = Field(None, description="the name given at training, if any")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="the network's shape (ModelConfig)")
    training: dict[str, Any] = Field(default_factory=dict, description="the training recipe it was trained with")
    metrics: dict[str, Any] = Field(default_factory=dict, description="held-out evaluation at the end of training")
    data: dict[str, Any] = Field(default_factory=dict, description="what it was trained on")
    history_points: int = Field(0, description="points on its training curve")

    def to_json(self) -> str:
        """The column's text; only the keys that were given, so a row reads back as it was written."""
        return self.model_dump_json(exclude_unset=True)


Info = CheckpointInfo | Mapping[str, Any]  # what the stores accept for the info column: the document, or its mapping


def encode_info(info: Info) -> str:
    """The `info` column's text; a mapping is validated as the same document."""
    return CheckpointInfo.model_validate(info).to_json()


@dataclass(frozen=True, slots=True)
class ModelRow:
    """A registered model without its checkpoint bytes."""

    id: str
    source: Source
    path: str | None  # shipped models only: the read-only file in weights/
    sha256: str
    created_at: str
    info: CheckpointInfo
    size: int | None  # trained models only: the checkpoint's bytes
    active: bool  # the pointer names it (False for the default model while the pointer is unset)


def model_row(row: RowMapping) -> ModelRow:
    return ModelRow(id=row["id"], source=row["source"], path=row["path"], sha256=row["sha256"],
                    created_at=row["created_at"], info=CheckpointInfo.model_validate_json(row["info"]),
                    size=row["size"], active=bool(row["active"]))

