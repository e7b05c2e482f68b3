"""Strict query-string parsing: plain ASCII digits only, each parameter at most once, nothing unknown.

Python's int() accepts signs, underscores, whitespace and non-ASCII digits such as '²' or '٣', and raises
on 4,300-digit numbers; none of that should reach the model or become a 500. Every error names its field.
"""
from __future__ import annotations

import re

from starlette.datastructures import QueryParams

from ..errors import InvalidInput

DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII only, small enough that int() is cheap and exact
MAX_ITEMS = 64  # far above any sequence length a model may have; the model's own length is checked later


def check_params(query: QueryParams, allowed: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for name, _ in query.multi_items():
        if name not in allowed:
            raise InvalidInput(name[:40] or "query", f"unknown parameter; this route takes {', '.join(allowed)}")
        if name in seen:
            raise InvalidInput(name, "given more than once")
        seen.add(name)


def parse_int(field: str, text: str, low: int, high: int) -> int:
    if not DIGITS.fullmatch(text):
        raise InvalidInput(field, f"must be a whole number from {low} to {high} in plain digits; got {text[:20]!r}")
    value = int(text)
    if not low <= value <= high:
        raise InvalidInput(field, f"must be from {low} to {high}; got {value}")
    return value


def parse_tokens(field: str, text: str) -> list[int]:
    """'7,2' -> [7, 2]; the model checks the vocabulary and the length it allows."""
    parts = text.split(",", MAX_ITEMS)
    if len(parts) > MAX_ITEMS:
        raise InvalidInput(field, f"has more than {MAX_ITEMS} tokens")
    tokens = []
    for i, part in enumerate(parts):
        if not DIGITS.fullmatch(part):
            what = "is empty" if not part else f"is {part[:20]!r}, not a token in plain digits"
            raise InvalidInput(field, f"item {i} {what}; write tokens as comma-separated digits such as 7,2")
        tokens.append(int(part))
    return tokens
