"""The JSON job body, read the same way by the service's POST /jobs and by the CLI, so a job reproduces offline.

{"dataset": {"sequences": [[7,2,8,4,3], ...]} | {"generator": "random"},
 "model": {"attention": true, "embedding_dim": 16, "hidden_dim": 32, "vocab_size": 10, "seq_length": 5},
 "training": {"recipe": "default", "steps": 1000, "batch_size": 64, "learning_rate": 0.03, "teacher_forcing_ratio": 1.0,
              "seed": 0, "target_accuracy": null}}
Every field but the dataset is optional: training fields left out take the recipe's values (model.config.RECIPES).
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig, TrainConfig
from .data import DataError
from .training import Dataset


@dataclass(frozen=True)
class JobSpec:
    model: ModelConfig
    training: TrainConfig
    sequences: list[list[int]] | None  # None: the seed's random generator

    def dataset(self) -> Dataset:
        return Dataset(self.model, self.sequences)


def parse_job(body: dict) -> JobSpec:
    if not isinstance(body, dict):
        raise DataError("the job body must be a JSON object")
    dataset = body.get("dataset")
    if not isinstance(dataset, dict) or ("sequences" in dataset) == ("generator" in dataset):
        raise DataError('dataset must be {"sequences": [[...], ...]} or {"generator": "random"}')
    if "generator" in dataset and dataset["generator"] != "random":
        raise DataError(f"dataset.generator must be \"random\", got {dataset['generator']!r}")
    model = ModelConfig.from_dict(body.get("model") or {})
    training = TrainConfig.from_dict(body.get("training") or {})
    sequences = dataset.get("sequences")
    spec = JobSpec(model, training, sequences)
    spec.dataset()  # validates every sequence against the model, naming the first bad one
    return spec
