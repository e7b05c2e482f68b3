"""Who may manage the service: one API key, locked by default.

Inference and the model list are open. Training, activation and deletion need `Authorization: Bearer KEY`.
With no key configured the service makes one at first start and keeps it in DATA_DIR/api-key (mode 0600), so
a fresh install is never open by accident; opening it takes SEQ2SEQ_AUTH=disabled, said out loud in the log.
The check runs in the middleware, before a body is read, so an unauthenticated upload costs nothing.
"""
from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("seq2seq.security")
KEY_FILE = "api-key"
MANAGED_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def needs_key(method: str, path: str) -> bool:
    """Jobs (all of them: their bodies are users' data) and every change to the model registry."""
    path = path.rstrip("/")
    if path == "/jobs" or path.startswith("/jobs/"):
        return True
    return path.startswith("/models/") and method in MANAGED_METHODS


def key_matches(header: bytes | None, key: bytes) -> bool:
    """Constant-time comparison of `Bearer KEY` over the raw UTF-8 bytes of both sides."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(given.strip(), key)


def resolve_key(configured: str | None, auth: str, data_dir: Path) -> bytes | None:
    """The key management needs, or None when management is deliberately open."""
    if auth == "disabled":
        log.warning("SEQ2SEQ_AUTH=disabled: training, activation and deletion are OPEN to anyone who can reach "
                    "this service")
        return None
    if configured:
        return configured.encode("utf-8")
    path = data_dir / KEY_FILE
    key = _read_or_create(path)
    log.info("management API key: see %s (Authorization: Bearer <key>)", path)
    return key


def _read_or_create(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        key = path.read_bytes().strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    fresh = secrets.token_urlsafe(32).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, fresh + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and never replaces a key another process wrote first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    key = path.read_bytes().strip()
    if not key:
        raise RuntimeError(f"{path} is empty; delete it to make a new key")
    return key
