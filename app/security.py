"""Who may manage the service: one API key, locked by default.

Inference and the model list are open. Training, activation, alias moves and deletion need `Authorization: Bearer
KEY`, and so does naming a model on the inference routes other than production (the active model), an alias made
public (`"public": true` in its PUT) and the models in SEQ2SEQ_PUBLIC_MODELS: a trained model reproduces its
training data, which /jobs guards, and every other id would cost a load.
With no key configured the service makes one at first start and keeps it in DATA_DIR/api-key (mode 0600), so
a fresh install is never open by accident; opening it takes SEQ2SEQ_AUTH=disabled, said out loud in the log.

Which requests need the key is decided by the routes themselves: every route that carries the management
dependency (app.http.deps.Managed, which is also what OpenAPI shows as protected) is collected into one
pattern when the app is built. The middleware checks that pattern before a body is read, so an
unauthenticated upload costs nothing, and a new route is protected by declaring it, not by where its path is.
"""
from __future__ import annotations

import contextlib
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

from .errors import Forbidden
from .storage.aliases import PRODUCTION

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


def check_open_model(model_id: str, active_id: str | None, public: frozenset[str], public_alias: bool = False) -> None:
    """A request without the key may name production, an alias made public (public_alias: the name is one), the
    active model and the public ones; anything else is refused before the registry is asked, so unknown and
    private names cost the same nothing. 403, not 404: GET /models and /aliases list them anyway, and the answer
    says what would let the request through."""
    if model_id != PRODUCTION and not public_alias and model_id != active_id and model_id not in public:
        raise Forbidden(f"model: naming {model_id[:64]!r} needs the management key (Authorization: Bearer KEY); "
                        "without it only production, public aliases, the active model and those in "
                        "SEQ2SEQ_PUBLIC_MODELS answer")


def key_matches(header: bytes | None, key: bytes) -> bool:
    """Constant-time comparison of `Bearer KEY` over the raw UTF-8 bytes of both sides."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(given.strip(), key)


MIN_KEY_LENGTH = 32
# The examples' placeholders start so (deploy/k8s/secret.example.yaml); a service must never run with one.
PLACEHOLDER = "CHANGE-ME"


class KeyRefused(ValueError):
    """A configured key the service will not run with; the message names where it came from."""


def checked_key(key: str, source: str) -> bytes:
    """The key as the service compares it: one trailing newline (from a secret file or `echo`) dropped, then at
    least MIN_KEY_LENGTH characters, no surrounding whitespace (a Bearer header could never carry it) and
    not an example's placeholder."""
    key = key.removesuffix("\n").removesuffix("\r")
    if key.strip().upper().startswith(PLACEHOLDER):
        raise KeyRefused(f"{source} is the example's placeholder {key.strip()!r}; set a generated key "
                         "(openssl rand -hex 32)")
    if key != key.strip():
        raise KeyRefused(f"{source} has leading or trailing whitespace, which no Authorization header can carry")
    if len(key) < MIN_KEY_LENGTH:
        raise KeyRefused(f"{source} has {len(key)} characters; a key needs at least {MIN_KEY_LENGTH} "
                         "(openssl rand -hex 32 makes one)")
    return key.encode("utf-8")


def resolve_key(configured: str | None, auth: str, data_dir: Path) -> bytes | None:
    """The key management needs, or None when management is deliberately open. Raises KeyRefused for a key
    too short or a placeholder, naming SEQ2SEQ_API_KEY or the key file."""
    if auth == "disabled":
        log.warning("SEQ2SEQ_AUTH=disabled: training, activation and deletion are OPEN to anyone who can reach "
                    "this service")
        return None
    if configured:
        return checked_key(configured, "SEQ2SEQ_API_KEY")
    path = data_dir / KEY_FILE
    key = _read_or_create(path)
    log.info("management API key: see %s (Authorization: Bearer <key>)", path)
    return key


def _read_or_create(path: Path) -> bytes:
    """The key in `path`, made at first start. The file appears complete or not at all: the key is written in
    full to a temporary file and fsynced before it is linked into place, and a failed write (a full disk)
    leaves neither file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _checked_file(path, path.read_text("utf-8"))
    except FileNotFoundError:
        pass
    fresh = secrets.token_urlsafe(32).encode() + b"\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(fresh)
            while view:  # a short write (the disk filling up) writes the rest or raises
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic, and never replaces a key another process wrote first
        _fsync_dir(path.parent)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write a new API key to {path}: {exc.strerror}; free some space or set "
                                 "SEQ2SEQ_API_KEY") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return _checked_file(path, path.read_text("utf-8"))


def _checked_file(path: Path, text: str) -> bytes:
    if not text.strip():
        raise KeyRefused(f"{path} is empty; delete it to make a new key")
    return checked_key(text, str(path))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
