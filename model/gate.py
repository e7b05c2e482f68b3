"""The offline gate of a learning cycle: a candidate against the model it would replace, before any user sees it.

Both are scored (model.heldout: NLL, hit@1, hit@3, MRR, keystroke savings) on two sets:
- usage: the usage holdout, sessions the candidate never trained on; hit@3 must improve with confidence (the
  lower end of the paired bootstrap interval of candidate minus control above 0);
- base: the base corpus's sequences on the prefixes usage did not touch; hit@3 may fall by at most `base_margin`
  (the interval's lower end at least -base_margin). No such sequence: nothing to forget there, and it passes.
The candidate passes only if both hold; the figures say why either way.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .bootstrap import paired
from .heldout import FIGURES, Scorer, per_item

DECIDING = "hit3"


def _side(control: Scorer, candidate: Scorer, sequences: Sequence[Sequence[int]], confidence: float, resamples: int,
          seed: int) -> dict[str, Any]:
    if not sequences:
        return {"n": 0}
    a, b = per_item(control, sequences), per_item(candidate, sequences)
    n = len(sequences)
    return {"n": n,
            "control": {f: round(sum(a[f]) / n, 6) for f in FIGURES},
            "candidate": {f: round(sum(b[f]) / n, 6) for f in FIGURES},
            "difference": {f: paired(a[f], b[f], confidence=confidence, resamples=resamples, seed=seed).as_dict()
                           for f in FIGURES}}


def judge(control: Scorer, candidate: Scorer, usage: Sequence[Sequence[int]], base: Sequence[Sequence[int]], *,
          confidence: float = 0.95, base_margin: float = 0.02, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The figures on both sets, and {"passed": bool, "reason": str}."""
    figures: dict[str, Any] = {
        "usage": _side(control, candidate, usage, confidence, resamples, seed),
        "base": _side(control, candidate, base, confidence, resamples, seed + 1),
        "rules": {"metric": "hit@3", "confidence": confidence, "base_margin": base_margin, "resamples": resamples,
                  "seed": seed}}
    reasons = []
    u = figures["usage"]
    if u["n"] == 0:
        usage_ok = False
        reasons.append("no usage holdout to judge on")
    else:
        d = u["difference"][DECIDING]
        usage_ok = d["low"] > 0
        reasons.append(f"usage hit@3 {u['control'][DECIDING]:.3f} -> {u['candidate'][DECIDING]:.3f} on {u['n']} held-out "
                       f"events, difference {d['mean']:+.3f} ({confidence:.0%} interval {d['low']:+.3f} to "
                       f"{d['high']:+.3f}): " + ("improved" if usage_ok else "not shown to improve"))
    b = figures["base"]
    if b["n"] == 0:
        base_ok = True
        reasons.append("base: usage touched every prefix of the base corpus, so none is left to check for forgetting")
    else:
        d = b["difference"][DECIDING]
        base_ok = d["low"] >= -base_margin
        reasons.append(f"base hit@3 on untouched prefixes {b['control'][DECIDING]:.3f} -> "
                       f"{b['candidate'][DECIDING]:.3f} on {b['n']} sequences, interval low {d['low']:+.3f} against "
                       f"a margin of -{base_margin:g}: " + ("kept" if base_ok else "fell too far"))
    figures["passed"] = usage_ok and base_ok
    figures["reason"] = ("passed: " if figures["passed"] else "refused: ") + "; ".join(reasons)
    return figures
