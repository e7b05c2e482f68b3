"""Learning from usage: policies per alias (policy.py), a cycle's training set (training_set.py), and the loop that
starts cycles once and moves them on (service.py)."""
from .policy import DEFAULTS, Policy
from .service import Learning

__all__ = ["DEFAULTS", "Learning", "Policy"]
