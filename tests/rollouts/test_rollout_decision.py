"""The rollout decision: the mSPRT keeps its level under constant peeking (where a fixed-horizon z-test does not),
finds a clearly worse candidate, pools steps without Simpson's paradox; guardrails roll back naming their figures;
steps go up and end in promotion."""
from __future__ import annotations

import json
import math
import random

import pytest

from app.errors import InvalidInput
from app.rollouts.decision import Action, ArmStats, Guardrails, RolloutConfig, StepStats, decide
from app.rollouts.sequential import compare, proportion_interval

ALPHA, TAU = 0.05, 0.05


def peeking_runs(p_control: float, p_candidate: float, runs: int, seed: int, *, share: float = 0.5,
                 looks: int = 100, every: int = 20) -> tuple[int, int]:
    """(runs the mSPRT called worse, runs a one-sided z-test at 1.645 called worse), each looked at `looks` times."""
    rng = random.Random(seed)
    msprt = naive = 0
    for _ in range(runs):
        nt = xt = nc = xc = 0
        hit_m = hit_n = False
        for _ in range(looks):
            for _ in range(every):
                if rng.random() < share:
                    nc += 1
                    xc += rng.random() < p_candidate
                else:
                    nt += 1
                    xt += rng.random() < p_control
            hit_m = hit_m or compare([(nt, xt, nc, xc)], ALPHA, TAU).worse
            if min(nt, nc) >= 10:
                p = (xt + xc) / (nt + nc)
                se = math.sqrt(p * (1 - p) * (1 / nt + 1 / nc)) or 1.0
                hit_n = hit_n or (xc / nc - xt / nt) / se < -1.645
        msprt += hit_m
        naive += hit_n
    return msprt, naive


def test_the_msprt_keeps_its_level_however_often_it_is_looked_at():
    # 200 A/A runs, each looked at 100 times: the mSPRT stays within alpha (+ 3 sd of 200 Bernoulli(0.05): 0.046);
    # the z-test looked at as often rejects far more, which shows that the peeking here has teeth.
    msprt, naive = peeking_runs(0.35, 0.35, runs=200, seed=1)
    assert msprt / 200 <= ALPHA + 0.046
    assert naive / 200 > 0.15
    assert naive > 2 * msprt


def test_a_better_candidate_is_never_called_worse_and_a_clearly_worse_one_always_is():
    assert peeking_runs(0.35, 0.40, runs=100, seed=2)[0] == 0
    worse, _ = peeking_runs(0.35, 0.25, runs=50, seed=3, looks=100, every=40)  # 2,000 per arm at the end
    assert worse == 50


def test_steps_are_strata_so_a_base_rate_that_falls_between_steps_is_no_difference():
    # Step 0 at 10%: both arms accept 50%; step 1 at 50%: both arms 20%. Pooled naively the candidate, with most
    # of its impressions in the worse period, would read 25% against 39%.
    strata = [(9000, 4500, 1000, 500), (5000, 1000, 5000, 1000)]
    test = compare(strata, ALPHA, TAU)
    assert test.difference == pytest.approx(0, abs=1e-12) and not test.worse and test.p_worse == 1.0
    naive = compare([(14000, 5500, 6000, 1500)], ALPHA, TAU)
    assert naive.worse


def test_intervals_cover_the_estimate_and_narrow_with_data():
    small = compare([(500, 175, 500, 150)], ALPHA, TAU)
    large = compare([(5000, 1750, 5000, 1500)], ALPHA, TAU)
    for t in (small, large):
        assert t.interval.low < t.difference < t.interval.high
    assert large.interval.high - large.interval.low < small.interval.high - small.interval.low
    assert large.interval.high < 0 and large.worse  # 30% against 35% over 5,000 each
    arm = proportion_interval(350, 1000, ALPHA, TAU)
    assert arm.low < 0.35 < arm.high and proportion_interval(0, 0, ALPHA, TAU) == type(arm)(0.0, 1.0)


def arm(requests=3000, errors=0, impressions=None, accepted=None, p99=20.0) -> ArmStats:
    impressions = requests - errors if impressions is None else impressions
    return ArmStats(requests, errors, impressions, round(0.35 * impressions) if accepted is None else accepted, p99)


def test_a_clearly_worse_candidate_is_rolled_back_naming_the_acceptance_figures():
    d = decide(RolloutConfig(), [StepStats(arm(18000), arm(2000, accepted=500))], 60)
    assert (d.action, d.percent, d.cause) == (Action.ROLL_BACK, 0, "acceptance")
    assert "acceptance: candidate 25.00% over 2000 impressions is worse than control 35.00% over 18000" in d.reason
    assert d.figures["test"]["worse"] and d.figures["test"]["ci"][1] < 0
    json.dumps(d.figures, allow_nan=False)


def test_the_error_guardrail_needs_evidence_and_then_names_the_figures():
    config = RolloutConfig()
    one_in_three = decide(config, [StepStats(arm(27), arm(3, errors=1))], 1)
    assert one_in_three.action is Action.HOLD
    all_failing = decide(config, [StepStats(arm(45), arm(5, errors=5))], 1)
    assert all_failing.action is Action.ROLL_BACK
    d = decide(config, [StepStats(arm(9000, errors=2), arm(1000, errors=30))], 30)
    assert (d.action, d.cause) == (Action.ROLL_BACK, "error_rate")
    assert "candidate error rate 3.00% (30 5xx in 1000 requests" in d.reason and "above the guardrail 1.00%" in d.reason
    assert "control 0.02% (2 in 9000)" in d.reason
    healthy = decide(config, [StepStats(arm(9000, errors=18), arm(1000, errors=4))], 30)
    assert healthy.action is not Action.ROLL_BACK  # 0.4%: under the threshold's bound


def test_when_both_arms_fail_the_rollout_holds_unless_the_candidate_fails_clearly_more():
    config = RolloutConfig()
    both = decide(config, [StepStats(arm(18000, errors=900), arm(2000, errors=100))], 30)
    assert both.action is Action.HOLD and "not the candidate's failure" in both.reason
    worse = decide(config, [StepStats(arm(18000, errors=900), arm(2000, errors=400))], 30)
    assert worse.action is Action.ROLL_BACK and "above the control's 5.00%" in worse.reason


def test_the_p99_guardrail_compares_with_the_control_once_both_have_enough_requests():
    config = RolloutConfig()
    d = decide(config, [StepStats(arm(9000, p99=100.0), arm(1000, p99=400.0))], 30)
    assert (d.action, d.cause) == (Action.ROLL_BACK, "p99_ratio")
    assert "candidate p99 400 ms > 1.5 x control p99 100 ms (= 150 ms; ratio 4.00)" in d.reason
    assert decide(config, [StepStats(arm(9000, p99=100.0), arm(1000, p99=140.0))], 30).action is Action.HOLD
    early = decide(config, [StepStats(arm(900, p99=100.0), arm(100, p99=400.0))], 3)
    assert early.action is Action.HOLD and "p99 needs 200 requests per arm" in early.reason
    off = RolloutConfig(min_requests=2000, guardrails=Guardrails(p99_ratio=None))
    assert decide(off, [StepStats(arm(18000, p99=100.0), arm(2000, p99=400.0))], 30).action is Action.STEP_UP


def test_steps_go_up_when_complete_and_the_last_running_step_promotes():
    config = RolloutConfig(steps=(10, 50, 100), min_requests=2000, min_feedback=1000, min_seconds=60)
    step0 = StepStats(arm(18000), arm(2000))
    held = decide(config, [StepStats(arm(9000), arm(1000))], 10)
    assert held.action is Action.HOLD and held.percent == 10
    assert "candidate requests 1000/2000" in held.reason and "seconds 10/60" in held.reason
    assert decide(config, [step0], 59).action is Action.HOLD
    up = decide(config, [step0], 60)
    assert (up.action, up.step, up.percent) == (Action.STEP_UP, 1, 50)
    no_feedback = decide(config, [step0, StepStats(arm(2000, impressions=100), arm(2000, impressions=100))], 60)
    assert no_feedback.action is Action.HOLD and "impressions with feedback 100/1000" in no_feedback.reason
    done = decide(config, [step0, StepStats(arm(2000), arm(2000))], 60)
    assert (done.action, done.percent) == (Action.PROMOTE, 100)
    with pytest.raises(ValueError, match="runs 2"):
        decide(config, [step0, step0, step0], 60)
    without_100 = RolloutConfig(steps=(5, 20, 60), min_requests=2000)
    assert decide(without_100, [step0, step0], 0).action is Action.STEP_UP
    assert decide(without_100, [step0, step0, step0], 0).action is Action.PROMOTE


def test_counters_since_a_step_began():
    assert ArmStats(100, 3, 90, 30, 25.0).since(ArmStats(40, 1, 35, 10, 99.0)) == ArmStats(60, 2, 55, 20, 25.0)
    with pytest.raises(ValueError, match="accepted"):
        ArmStats(10, 0, 5, 6)


@pytest.mark.parametrize("kwargs,field", [
    ({"steps": (50, 10)}, "steps"), ({"steps": (100,)}, "steps"), ({"steps": (0, 50)}, "steps"),
    ({"steps": (10.123, 50)}, "steps"), ({"metric": "clicks"}, "metric"), ({"alpha": 0.7}, "alpha"),
    ({"guardrails": {"error_rate": 2}}, "guardrails.error_rate"),
])
def test_a_bad_configuration_names_its_field(kwargs, field):
    if isinstance(kwargs.get("guardrails"), dict):
        with pytest.raises(InvalidInput) as bad:
            Guardrails(**kwargs["guardrails"])
    else:
        with pytest.raises(InvalidInput) as bad:
            RolloutConfig(**kwargs)
    assert bad.value.field == field


def test_promotion_waits_until_the_interval_rules_out_a_loss_larger_than_the_margin():
    step0 = StepStats(arm(18000), arm(2000))
    doubtful = [step0, StepStats(arm(2000), arm(2000, accepted=620))]  # 31% against 35% at the last step
    d = decide(RolloutConfig(min_requests=2000), doubtful, 0)
    assert d.action is Action.HOLD and not d.figures["test"]["worse"]
    assert "promotion needs the difference's interval above -3.00 points" in d.reason
    assert d.figures["test"]["ci"][0] < -0.03
    assert decide(RolloutConfig(min_requests=2000, promote_margin=None), doubtful, 0).action is Action.PROMOTE
    assert decide(RolloutConfig(min_requests=2000), [step0, StepStats(arm(2000), arm(2000))], 0).action \
        is Action.PROMOTE
