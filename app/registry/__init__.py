"""The model registry: rows in the database (catalogue), models in memory (loader), the active pointer every
process follows (follower), behind one Registry (registry)."""
from ..storage import CheckpointInfo
from .catalogue import ModelInfo, info_of
from .ids import MODEL_ID, check_model_id
from .loader import LoadedModel
from .registry import Registry

__all__ = ["MODEL_ID", "CheckpointInfo", "LoadedModel", "ModelInfo", "Registry", "check_model_id", "info_of"]
