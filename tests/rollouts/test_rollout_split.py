"""The rollout split: a session's arm is a function of the rollout and the session alone (the same in every process,
whatever PYTHONHASHSEED), sticky as the candidate's share grows, and accurate to a fraction of a point."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from app.rollouts import split
from app.rollouts.split import Arm
from tests.conftest import ROOT

SESSIONS = [f"session-{random.Random(7).getrandbits(64) + i:x}" for i in range(20_000)]


def test_the_same_session_gets_the_same_arm_on_every_call():
    for s in SESSIONS[:200]:
        arms = {split.choose_arm("r1", 30, s) for _ in range(5)}
        assert len(arms) == 1
    assert {split.choose_arm("r1", 30, s) for s in SESSIONS[:200]} == {Arm.CONTROL, Arm.CANDIDATE}


@pytest.mark.parametrize("hashseed", ["0", "12345"])
def test_another_process_with_another_hash_seed_computes_the_same_buckets(hashseed):
    code = ("import json, sys; from app.rollouts import split; "
            "print(json.dumps([split.bucket('rollout-9', s) for s in json.loads(sys.stdin.read())]))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(SESSIONS[:500]), capture_output=True,
                         text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": hashseed})
    assert json.loads(out.stdout) == [split.bucket("rollout-9", s) for s in SESSIONS[:500]]


def test_a_session_in_the_candidate_stays_there_as_the_share_grows():
    steps = [1, 10, 25, 50, 100]
    for s in SESSIONS[:5000]:
        arms = [split.choose_arm("r2", p, s) for p in steps]
        first = arms.index(Arm.CANDIDATE)  # at 100 every session is a candidate's
        assert all(a is Arm.CANDIDATE for a in arms[first:]), (s, arms)
    assert all(split.choose_arm("r2", 0, s) is Arm.CONTROL for s in SESSIONS[:1000])


def test_a_10_percent_step_is_observed_at_10_plus_minus_1_over_20000_sessions():
    # Binomial: 2,000 expected, sd sqrt(20000 * 0.1 * 0.9) = 42.4 sessions = 0.21 points, so +-1 point is 4.7 sd.
    for rollout in ("r3", "r4", "r5"):
        share = sum(split.choose_arm(rollout, 10, s) is Arm.CANDIDATE for s in SESSIONS) / len(SESSIONS)
        assert 0.09 <= share <= 0.11, (rollout, share)


def test_rollouts_draw_different_sessions_for_their_candidate():
    a = {s for s in SESSIONS if split.choose_arm("ra", 10, s) is Arm.CANDIDATE}
    b = {s for s in SESSIONS if split.choose_arm("rb", 10, s) is Arm.CANDIDATE}
    assert 0.005 <= len(a & b) / len(SESSIONS) <= 0.015  # independent: about 10% of 10%


def test_without_a_session_the_arm_is_drawn_per_request():
    rng = random.Random(3)
    arms = [split.choose_arm("r6", 10, None, rng=rng) for _ in range(20_000)]
    assert 0.09 <= arms.count(Arm.CANDIDATE) / len(arms) <= 0.11
    assert arms[:50].count(Arm.CANDIDATE) not in (0, 50)


def test_percent_has_two_decimals_and_bounds():
    assert split.threshold(10) == 1000 and split.threshold(0.25) == 25 and split.threshold(100) == split.BUCKETS
    for bad in (-1, 100.5):
        with pytest.raises(ValueError, match="percent"):
            split.threshold(bad)


def test_the_shadow_sample_is_deterministic_per_key_at_its_rate_and_independent_of_the_split():
    keys = SESSIONS[:10_000]
    sampled = [split.shadow_sampled("r7", 0.2, k) for k in keys]
    assert sampled == [split.shadow_sampled("r7", 0.2, k) for k in keys]
    assert 0.18 <= sum(sampled) / len(keys) <= 0.22
    in_candidate = [x for k, x in zip(keys, sampled) if split.choose_arm("r7", 10, k) is Arm.CANDIDATE]
    assert 0.15 <= sum(in_candidate) / len(in_candidate) <= 0.25  # not the split's buckets again
    assert not any(split.shadow_sampled("r7", 0, k) for k in keys[:100])
    assert all(split.shadow_sampled("r7", 1, k) for k in keys[:100])
    with pytest.raises(ValueError, match="rate"):
        split.shadow_sampled("r7", 1.5, "k")
