"""Whether a finished job's model becomes active: a pure function of the job's policy and its evaluation."""
from __future__ import annotations

from model.jobspec import Activation

from .protocol import Gate


def decide(policy: Activation, gate: Gate | None, compared_id: str | None) -> tuple[bool, str]:
    """(activate?, the reason the job records). if_better compares on the job's own held-out set."""
    if policy == "never":
        return False, "not activated: activate was 'never'"
    if policy == "always":
        return True, "activated: activate was 'always'"
    if gate is not None and gate.comparable and gate.active is not None:
        if gate.new < gate.active:
            return False, (f"not activated: scored {gate.new:.4f} on this job's held-out set, below the active "
                           f"model {compared_id!r} ({gate.active:.4f})")
        return True, (f"activated: scored {gate.new:.4f} on this job's held-out set, at least the active model "
                      f"{compared_id!r} ({gate.active:.4f})")
    if compared_id is None:
        return True, "activated: no model was active"
    return False, f"not activated: {gate.reason if gate and gate.reason else 'no comparison was possible'}"
