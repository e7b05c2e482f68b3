"""Where a number may lie, written once: the configs check their fields with these, job bodies narrow them with
the service's caps, and the HTTP schema shows the same numbers (as_field), so no layer keeps a second copy."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypedDict


class FieldBounds(TypedDict, total=False):
    """An Interval as pydantic's Field keywords."""

    ge: float
    gt: float
    le: float


class FieldError(ValueError):
    """A config field set to what it cannot be; `field` names it, `reason` says what it must be."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field} {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Interval:
    """[low, high], low itself excluded when low_open; None leaves that side unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def up_to(self, high: float) -> Interval:
        return replace(self, high=high)

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        low, high = self.low, self.high
        if self.high is None:
            return f"at least {low}" if not self.low_open else "positive" if self.low == 0 else f"above {low}"
        if self.low is None:
            return f"at most {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}]"

    def check(self, field: str, value: float) -> None:
        if value not in self:
            raise FieldError(field, f"must be {self.describe()}, got {value!r}")

    def as_field(self) -> FieldBounds:
        bounds = FieldBounds()
        if self.low is not None:
            bounds["gt" if self.low_open else "ge"] = self.low
        if self.high is not None:
            bounds["le"] = self.high
        return bounds

