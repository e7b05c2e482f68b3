"""When a policy's cycle is due: the threshold, the interval with any new event, nothing while off."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.learning.policy import Policy
from app.learning.service import Learning
from app.storage import Due, PolicyRow

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def due(new_events: int, *, enabled: bool = True, last_cycle_ago: float | None = None,
        enabled_ago: float = 10.0) -> Due:
    at = lambda ago: None if ago is None else (NOW - timedelta(seconds=ago)).isoformat()  # noqa: E731
    row = PolicyRow("production", enabled, {}, at(0), at(enabled_ago), 0, 0, at(last_cycle_ago))
    return Due(row, new_events, new_events, None, "default", NOW)


def test_a_cycle_is_due_at_the_threshold_or_after_the_interval_with_any_new_event():
    policy = Policy(enabled=True, min_feedback=100, max_interval_s=3600)
    assert Learning._due(policy, due(99)) is None
    assert Learning._due(policy, due(100)) == "threshold"
    assert Learning._due(policy, due(1, enabled_ago=3600)) == "interval"  # counted from when it was turned on
    assert Learning._due(policy, due(1, enabled_ago=7200, last_cycle_ago=60)) is None  # then from the last cycle
    assert Learning._due(policy, due(1, enabled_ago=7200, last_cycle_ago=3601)) == "interval"
    assert Learning._due(policy, due(0, enabled_ago=99_999)) is None  # no new event: nothing to learn
    off = Policy(enabled=False, min_feedback=100)
    assert Learning._due(off, due(1000, enabled=False)) is None
