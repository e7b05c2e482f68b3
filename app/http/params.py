"""Strict query-string parsing: plain ASCII digits only, each parameter at most once, nothing unknown.

Python's int() accepts signs, underscores, whitespace and non-ASCII digits such as '²' or '٣', and raises
on 4,300-digit numbers; none of that should reach the model or become a 500. Every error names its field.
"""
from __future__ import annotations

import re

from starlette.datastructures import QueryParams

from model.limits import MAX_SEQ_LENGTH, MAX_VOCAB

from ..errors import InvalidInput

DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII only, small enough that int() is cheap and exact


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


def parse_token(field: str, text: str) -> int:
    return parse_int(field, text, 0, MAX_VOCAB - 1)


def parse_tokens(field: str, text: str) -> list[int]:
    """'7,2' -> [7, 2], within the bounds of any model; the answering model's own rule is applied later."""
    parts = text.split(",", MAX_SEQ_LENGTH)
    if len(parts) > MAX_SEQ_LENGTH:
        raise InvalidInput(field, f"has more than {MAX_SEQ_LENGTH} tokens")
    tokens = []
    for i, part in enumerate(parts):
        if not DIGITS.fullmatch(part):
            what = "is empty" if not part else f"is {part[:20]!r}, not a token in plain digits"
            raise InvalidInput(field, f"item {i} {what}; write tokens as comma-separated digits such as 7,2")
        tokens.append(parse_token(f"{field}[{i}]", part))
    return tokens
