"""What a model id may be: a file name in weights/, a database key and a URL segment at once."""
from __future__ import annotations

import re

from ..errors import NotFound

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_model_id(model_id: str) -> str:
    if not MODEL_ID.match(model_id or ""):
        raise NotFound(f"model id {model_id[:80]!r} is not valid: letters, digits, '.', '_' and '-', at most 64")
    return model_id
