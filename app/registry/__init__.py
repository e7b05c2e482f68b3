"""The model registry: rows in the database, models in memory, the active pointer every process follows."""
from .registry import MODEL_ID, LoadedModel, Registry, check_model_id, info_of

__all__ = ["MODEL_ID", "LoadedModel", "Registry", "check_model_id", "info_of"]
