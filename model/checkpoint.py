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

from .config import ModelConfig
from .network import Seq2Seq

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "model_config", "state_dict", "vocabulary", "metrics", "created_at")


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
         data: dict | None = None, history: list | None = None, name: str | None = None) -> str:
    """Write the checkpoint and its manifest; return the SHA-256 of the checkpoint."""
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
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        model = Seq2Seq(config)
        model.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"weights do not fit its configuration ({exc})") from exc
    model.to(device).eval()
    return Checkpoint(model, config, payload["metrics"], payload["created_at"], digest, path,
                      payload.get("train_config", {}), payload.get("data", {}), payload.get("history", []),
                      payload.get("name"))
