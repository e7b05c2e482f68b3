"""Who may manage the service: one API key, locked by default.

Inference and the model list are open. Training, activation and deletion need `Authorization: Bearer KEY`.
With no key configured the service makes one at first start and keeps it in DATA_DIR/api-key (mode 0600), so
a fresh install is never open by accident; opening it takes SEQ2SEQ_AUTH=disabled, said out loud in the log.

Which requests need the key is decided by the routes themselves: every route that carries the management
dependency (app.http.deps.Managed, which is also what OpenAPI shows as protected) is collected into one
pattern when the app is built. The middleware checks that pattern before a body is read, so an
unauthenticated upload costs nothing, and a new route is protected by declaring it, not by where its path is.
"""
from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

log = logging.getLogger("seq2seq.security")
KEY_FILE = "api-key"


def _carries(dependant: Dependant, marker: object) -> bool:
    return any(dep.call is marker or _carries(dep, marker) for dep in dependant.dependencies)


def _unnamed(pattern: str) -> str:
    """A route's pattern without its group names, which may repeat across the routes joined into one."""
    return re.sub(r"\(\?P<[^>]+>", "(?:", pattern)


@dataclass(frozen=True)
class ManagedRoutes:
    """The (method, path) pairs that need the key: one regular expression per method, so a request costs
    one match whatever the number of managed routes."""

    patterns: dict[str, re.Pattern[str]]

    @classmethod
    def of(cls, routes: Iterable[BaseRoute], marker: object) -> ManagedRoutes:
        by_method: dict[str, list[str]] = {}
        for route in routes:
            if isinstance(route, APIRoute) and _carries(route.dependant, marker):
                methods = route.methods or set()
                for method in methods | ({"HEAD"} if "GET" in methods else set()):  # as a server may
                    by_method.setdefault(method, []).append(route.path_regex.pattern)
        return cls({m: re.compile("|".join(f"(?:{_unnamed(p)})" for p in ps)) for m, ps in by_method.items()})

    def need_key(self, method: str, path: str) -> bool:
        pattern = self.patterns.get(method)
        return pattern is not None and pattern.match(path) is not None


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
