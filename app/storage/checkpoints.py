"""Checkpoint bytes checked the way the service loads files: SHA-256 first, then `model.checkpoint.load`
(weights_only=True, so no code in the bytes runs). torch is imported only when a checkpoint is actually loaded,
so migrations and the stores stay light.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import IntegrityFailure

if TYPE_CHECKING:
    from model.checkpoint import Checkpoint


def sha256_of(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def check_sha256(blob: bytes, expected: str, what: str) -> None:
    digest = sha256_of(blob)
    if digest != expected:
        raise IntegrityFailure(f"{what}: SHA-256 {digest[:12]}... does not match the recorded {expected[:12]}... "
                               "(the bytes are corrupt, truncated or were modified)")


def load_checkpoint(blob: bytes, device: str = "cpu", name: str = "checkpoint.pt") -> Checkpoint:
    """Build the model from stored bytes. model.checkpoint loads files only, so the bytes go through a private
    temporary file with its manifest; the checks (hash, weights_only, format version, shapes) are exactly its own."""
    from model import checkpoint

    with tempfile.TemporaryDirectory(prefix="seq2seq-ckpt-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(blob)
        checkpoint.manifest_path(path).write_text(f"{sha256_of(blob)}  {name}\n")
        try:
            return checkpoint.load(path, device)
        except checkpoint.CheckpointError as exc:
            raise IntegrityFailure(f"{name} does not load: {exc.reason}") from exc


def verify_checkpoint(blob: bytes) -> None:
    """The default check before a trained model is registered: the bytes must load as a checkpoint."""
    load_checkpoint(blob)
