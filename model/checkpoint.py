"""One file per model, loaded without executing code, verified against a SHA-256 manifest, written atomically.

The file is a `torch.save` of plain containers and tensors (read back with `weights_only=True`): the state
dict, every hyperparameter, the vocabulary, training metrics, a description of the data, a format version
and the creation time. `NAME.sha256` beside it holds the digest in `sha256sum` format.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from .config import MODEL_BOUNDS, ModelConfig
from .limits import MAX_SEQ_LENGTH, MAX_VOCAB, MAX_WIDTH
from .network import Seq2Seq

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_config", "state_dict", "vocabulary", "metrics", "created_at")
# What a checkpoint's model_config may ask for: the largest model this project builds or serves (model/limits.py),
# checked before a single parameter is allocated, so a tampered file cannot ask for 2^31 embeddings.
LOADABLE_BOUNDS = {"vocab_size": MODEL_BOUNDS["vocab_size"].up_to(MAX_VOCAB),
                   "seq_length": MODEL_BOUNDS["seq_length"].up_to(MAX_SEQ_LENGTH),
                   "embedding_dim": MODEL_BOUNDS["embedding_dim"].up_to(MAX_WIDTH),
                   "hidden_dim": MODEL_BOUNDS["hidden_dim"].up_to(MAX_WIDTH)}


class CheckpointError(Exception):
    """A checkpoint that cannot be trusted; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"checkpoint {path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class Checkpoint:
    model: Seq2Seq
    config: ModelConfig
    metrics: dict
    created_at: str
    sha256: str
    path: Path
    train_config: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    name: str | None = None
    corpus: torch.Tensor | None = None  # the corpus it was trained on, (sequences, seq_length), never shown in /models

    def corpus_sequences(self) -> list[list[int]] | None:
        """The training corpus, so that a learning cycle can build on it; None when the file keeps none."""
        return None if self.corpus is None else self.corpus.tolist()


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def atomic_write(path: Path, payload: bytes) -> None:
    """Temporary file in the same directory, fsync, rename, fsync the directory: all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide shipped weights from a non-root server
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(path: Path | str, model: Seq2Seq, metrics: dict, train_config: dict | None = None,
         data: dict | None = None, history: list | None = None, name: str | None = None,
         corpus: list[list[int]] | None = None) -> str:
    """Write the checkpoint and its manifest; return the SHA-256 of the checkpoint. `corpus`: the sequences it was
    trained on, kept as one small integer tensor beside its digest (data["sha256"])."""
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "vocabulary": [str(i) for i in range(model.config.vocab_size)],
        "metrics": dict(metrics),
        "train_config": dict(train_config or {}),
        "data": dict(data or {}),
        "history": list(history or []),
        "name": name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if corpus:
        payload["corpus"] = torch.tensor(corpus, dtype=torch.int16 if model.config.vocab_size <= 32767 else torch.int32)
    buf = io.BytesIO()
    torch.save(payload, buf)
    blob = buf.getvalue()
    digest = hashlib.sha256(blob).hexdigest()
    atomic_write(path, blob)
    atomic_write(manifest_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def load(path: Path | str, device: torch.device | str = "cpu") -> Checkpoint:
    """Verify, then build the model; any doubt raises CheckpointError and nothing half-loaded escapes."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(path, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        expected = manifest_path(path).read_text().split()[0]
    except (OSError, IndexError) as exc:
        raise CheckpointError(path, f"its manifest {manifest_path(path).name} is missing or empty") from exc
    digest = hashlib.sha256(blob).hexdigest()
    if digest != expected:
        raise CheckpointError(path, f"SHA-256 {digest[:12]}... does not match the manifest's {expected[:12]}... "
                                    "(the file is corrupt, truncated or was modified)")
    try:
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad archives
        raise CheckpointError(path, f"is not a readable checkpoint ({type(exc).__name__})") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(path, "does not hold a checkpoint dictionary")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(path, f"has format version {version!r}; this build reads version {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(path, f"lacks {', '.join(missing)}")
    config = _bounded_config(path, payload["model_config"])
    try:
        model = Seq2Seq(config)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"weights do not fit its configuration ({exc})") from exc
    model.to(device).eval()
    return Checkpoint(model, config, payload["metrics"], payload["created_at"], digest, path,
                      payload.get("train_config", {}), payload.get("data", {}), payload.get("history", []),
                      payload.get("name"), _corpus(path, payload.get("corpus"), config))


def _corpus(path: Path, raw: object, config: ModelConfig) -> torch.Tensor | None:
    """The stored corpus, if any: integer tokens of the model's length and vocabulary, or CheckpointError."""
    if raw is None:
        return None
    if not isinstance(raw, torch.Tensor) or raw.dim() != 2 or raw.dtype not in (torch.int16, torch.int32):
        raise CheckpointError(path, "its corpus is not a table of integer tokens")
    if raw.size(1) != config.seq_length or (raw.numel() and not bool(((raw >= 0) & (raw < config.vocab_size)).all())):
        raise CheckpointError(path, "its corpus does not fit the model's length and vocabulary")
    return raw


def _bounded_config(path: Path, raw: object) -> ModelConfig:
    """The stored hyperparameters, typed and within LOADABLE_BOUNDS, or CheckpointError naming the field."""
    if not isinstance(raw, dict):
        raise CheckpointError(path, "its model_config is not a dictionary")
    for name, bounds in LOADABLE_BOUNDS.items():
        value = raw.get(name)
        if type(value) is not int:  # bool is an int subclass, and a float or a string is no size
            raise CheckpointError(path, f"model_config.{name} must be an integer, got {type(value).__name__}")
        if value not in bounds:
            raise CheckpointError(path, f"model_config.{name} must be {bounds.describe()}, got {value} "
                                        "(larger than any model this build serves)")
    if "attention" in raw and type(raw["attention"]) is not bool:
        raise CheckpointError(path, "model_config.attention must be true or false")
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(path, f"its model_config is not valid ({exc})") from exc
